// Package archtest keeps the package map's rule true: arrows point inward.
// core imports only the standard library; the router never imports storage;
// adapters import neither storage nor each other; nothing imports cmd/.
package archtest

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const mod = "github.com/bourse-mq/bourse/"

type pkg struct {
	ImportPath string
	Imports    []string
	Deps       []string
	Standard   bool
}

func TestImportRules(t *testing.T) {
	out, err := exec.Command("go", "list", "-json", "-deps=false", "github.com/bourse-mq/bourse/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	n := 0
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		n++
		self := strings.TrimPrefix(p.ImportPath, mod)
		for _, imp := range p.Imports {
			if err := check(self, imp); err != "" {
				t.Errorf("%s imports %s: %s", p.ImportPath, imp, err)
			}
		}
	}
	if n < 5 {
		t.Fatalf("only %d packages listed", n)
	}
}

func check(self, imp string) string {
	internal := strings.HasPrefix(imp, mod)
	dep := strings.TrimPrefix(imp, mod)
	switch {
	case internal && strings.HasPrefix(dep, "cmd/"):
		return "nothing may import cmd/"
	case self == "core" || strings.HasPrefix(self, "core/"):
		if !isStd(imp) {
			return "core imports only the standard library"
		}
	case strings.HasPrefix(self, "router"):
		if internal && strings.HasPrefix(dep, "storage") {
			return "the router declares the persistence interfaces it needs and never imports storage"
		}
		if internal && strings.HasPrefix(dep, "protocols") {
			return "the router never imports an adapter"
		}
		if internal && strings.HasPrefix(dep, "cluster") {
			return "the router declares the Replicator it needs and never imports cluster"
		}
	case strings.HasPrefix(self, "storage"):
		if internal && (strings.HasPrefix(dep, "router") || strings.HasPrefix(dep, "protocols")) {
			return "storage knows only core"
		}
	case self == "cluster" || strings.HasPrefix(self, "cluster/"):
		// storage/record is the public message codec (core only): the
		// cluster stores messages in JetStream in the journal's format.
		if internal && !strings.HasPrefix(dep, "core") && !strings.HasPrefix(dep, "router") && !strings.HasPrefix(dep, "cluster") && dep != "storage/record" {
			return "the cluster backplane implements the router's interfaces and knows only core and router"
		}
	case strings.HasPrefix(self, "protocols/"):
		own := strings.SplitN(strings.TrimPrefix(self, "protocols/"), "/", 2)[0]
		if internal && strings.HasPrefix(dep, "storage") {
			return "adapters never import storage"
		}
		if internal && strings.HasPrefix(dep, "cluster") {
			return "adapters never import cluster: only cmd/bourse wires it in"
		}
		if internal && strings.HasPrefix(dep, "protocols/") && !strings.HasPrefix(dep, "protocols/"+own) {
			return "adapters never import each other"
		}
	}
	return ""
}

// isStd reports whether imp is a standard-library package (no dot in its
// first path element).
func isStd(imp string) bool {
	first := strings.SplitN(imp, "/", 2)[0]
	return !strings.Contains(first, ".")
}

func TestCheckCatchesViolations(t *testing.T) {
	for _, c := range [][2]string{
		{"core", "github.com/spf13/cobra"},
		{"router", mod + "storage/meta"},
		{"protocols/amqp", mod + "protocols/stomp"},
		{"protocols/mqtt", mod + "storage"},
		{"storage", mod + "router"},
		{"httpapi", mod + "cmd/bourse"},
		{"protocols/amqp", mod + "cluster"},
		{"router", mod + "cluster"},
		{"cluster", mod + "storage/meta"},
	} {
		if check(c[0], c[1]) == "" {
			t.Errorf("%s importing %s passed the check", c[0], c[1])
		}
	}
	if check("protocols/amqp", mod+"protocols/amqp/wire") != "" || check("core", "fmt") != "" {
		t.Error("legal import refused")
	}
}
