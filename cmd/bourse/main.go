// Command bourse is the Bourse broker: `bourse serve` runs it; other
// subcommands are its tools.
package main

import (
	"fmt"
	"os"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// version is set with -ldflags "-X main.version=…"; otherwise the module
// version or VCS revision from the build info is used.
var version = ""

func versionString() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v = "dev-" + s.Value[:12]
		}
	}
	if v == "" || v == "(devel)" {
		v = "dev"
	}
	return v
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "bourse",
		Short:         "Bourse: one broker for AMQP 0-9-1, MQTT and STOMP",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newServeCmd(), newTailCmd(), newDefinitionsCmd(), newListCmd(), newDeclareCmd(), newDeleteCmd(), newStatusCmd(), newPublishCmd(), newGetCmd(), newHealthcheckCmd(), newUserCmd(), newPermissionsCmd(), &cobra.Command{
		Use:   "version",
		Short: "print the version",
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintf(cmd.OutOrStdout(), "bourse %s\n", versionString())
		},
	})
	return root
}

func main() {
	if err := newRoot().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "bourse:", err)
		os.Exit(1)
	}
}
