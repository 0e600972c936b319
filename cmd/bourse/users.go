package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"

	"github.com/spf13/cobra"
)

// newUserCmd is `bourse user add|delete|passwd|tags|list`, through the
// management API of a running broker (as rabbitmqctl talks to a running
// node). Passwords are read from --password or, when it is absent, from
// the first line of standard input, so they need not appear in a process
// listing or a shell history.
func newUserCmd() *cobra.Command {
	c := &apiClient{}
	cmd := &cobra.Command{Use: "user", Short: "manage users: add, delete, passwd, tags, list"}
	addAPIFlags(cmd, c)
	var password string
	var tags string
	var noPassword bool
	readPassword := func(cmd *cobra.Command) (string, error) {
		if noPassword {
			return "", nil
		}
		if cmd.Flags().Changed("password") {
			return password, nil
		}
		line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", err
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			return "", errors.New("no password: pass --password, a line on standard input, or --no-password for a certificate-only user")
		}
		return line, nil
	}
	splitTags := func(s string) []string {
		out := []string{}
		for _, t := range strings.Split(s, ",") {
			if t = strings.TrimSpace(t); t != "" {
				out = append(out, t)
			}
		}
		return out
	}
	add := &cobra.Command{
		Use: "add NAME", Short: "create a user (or replace its password and tags)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pw, err := readPassword(cmd)
			if err != nil {
				return err
			}
			body := map[string]any{"password": pw, "tags": splitTags(tags)}
			if noPassword {
				body = map[string]any{"password_hash": "", "tags": splitTags(tags)}
			}
			if _, err := c.do("PUT", "users/"+url.PathEscape(args[0]), body); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "user %s saved\n", args[0])
			return nil
		},
	}
	add.Flags().StringVar(&password, "password", "", "the new user's password (default: read a line from standard input)")
	add.Flags().StringVar(&tags, "tags", "", "comma-separated tags: administrator, management, monitoring, policymaker")
	add.Flags().BoolVar(&noPassword, "no-password", false, "a user who can only log in with a client certificate")
	passwd := &cobra.Command{
		Use: "passwd NAME", Short: "change a user's password (tags are kept)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			u, err := getUser(c, args[0])
			if err != nil {
				return err
			}
			pw, err := readPassword(cmd)
			if err != nil {
				return err
			}
			if _, err := c.do("PUT", "users/"+url.PathEscape(args[0]), map[string]any{"password": pw, "tags": u.Tags}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "password of %s changed\n", args[0])
			return nil
		},
	}
	passwd.Flags().StringVar(&password, "password", "", "the new password (default: read a line from standard input)")
	setTags := &cobra.Command{
		Use: "tags NAME TAG[,TAG…]", Short: "set a user's tags (\"\" for none)", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := getUser(c, args[0]); err != nil {
				return err
			}
			if _, err := c.do("PUT", "users/"+url.PathEscape(args[0]), map[string]any{"tags": splitTags(args[1])}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "tags of %s set\n", args[0])
			return nil
		},
	}
	del := &cobra.Command{
		Use: "delete NAME", Short: "delete a user and their permissions", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := c.do("DELETE", "users/"+url.PathEscape(args[0]), nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "user %s deleted\n", args[0])
			return nil
		},
	}
	list := newListCmd()
	list.Use, list.Short, list.Args = "list", "list users", cobra.NoArgs
	run := list.RunE
	list.RunE = func(cmd *cobra.Command, _ []string) error { return run(cmd, []string{"users"}) }
	cmd.AddCommand(add, passwd, setTags, del, list)
	return cmd
}

type userInfo struct {
	Name string   `json:"name"`
	Tags []string `json:"tags"`
}

func getUser(c *apiClient, name string) (userInfo, error) {
	var u userInfo
	b, err := c.do("GET", "users/"+url.PathEscape(name), nil)
	if err != nil {
		return u, err
	}
	return u, json.Unmarshal(b, &u)
}

// newPermissionsCmd is `bourse permissions set|clear|list` and
// `bourse permissions topic set|clear`.
func newPermissionsCmd() *cobra.Command {
	c := &apiClient{}
	var vhost string
	cmd := &cobra.Command{Use: "permissions", Short: "set, clear or list users' permissions in a vhost"}
	addAPIFlags(cmd, c)
	cmd.PersistentFlags().StringVar(&vhost, "vhost", "/", "the vhost")
	path := func(kind, user string) string {
		return kind + "/" + url.PathEscape(vhost) + "/" + url.PathEscape(user)
	}
	set := &cobra.Command{
		Use: "set USER CONFIGURE WRITE READ", Short: "set a user's configure, write and read regular expressions (as rabbitmqctl set_permissions)",
		Args: cobra.ExactArgs(4),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := c.do("PUT", path("permissions", args[0]), map[string]string{"configure": args[1], "write": args[2], "read": args[3]}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "permissions of %s in vhost %s set\n", args[0], vhost)
			return nil
		},
	}
	clear := &cobra.Command{
		Use: "clear USER", Short: "remove a user's permissions in the vhost", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := c.do("DELETE", path("permissions", args[0]), nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "permissions of %s in vhost %s cleared\n", args[0], vhost)
			return nil
		},
	}
	list := newListCmd()
	list.Use, list.Short, list.Args = "list", "list permissions", cobra.NoArgs
	run := list.RunE
	list.RunE = func(cmd *cobra.Command, _ []string) error { return run(cmd, []string{"permissions"}) }
	topic := &cobra.Command{Use: "topic", Short: "topic permissions (routing keys, MQTT topics) on one exchange"}
	topicSet := &cobra.Command{
		Use: "set USER EXCHANGE WRITE READ", Short: "set a user's topic write and read regular expressions on EXCHANGE", Args: cobra.ExactArgs(4),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := c.do("PUT", path("topic-permissions", args[0]), map[string]string{"exchange": args[1], "write": args[2], "read": args[3]}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "topic permissions of %s on %s in vhost %s set\n", args[0], args[1], vhost)
			return nil
		},
	}
	topicClear := &cobra.Command{
		Use: "clear USER [EXCHANGE]", Short: "remove a user's topic permissions (on one exchange, or all)", Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			p := path("topic-permissions", args[0])
			if len(args) == 2 {
				p += "?exchange=" + url.QueryEscape(args[1])
			}
			if _, err := c.do("DELETE", p, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "topic permissions of %s in vhost %s cleared\n", args[0], vhost)
			return nil
		},
	}
	topic.AddCommand(topicSet, topicClear)
	cmd.AddCommand(set, clear, list, topic)
	return cmd
}
