package wire

import (
	"bytes"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/bourse-mq/bourse/protocols/amqp/wire/internal/gen/specgen"
)

// TestGeneratedIsUpToDate regenerates spec_gen.go in memory and fails if the
// committed file differs, so edits to the generator or the spec cannot drift
// from the code they produce.
func TestGeneratedIsUpToDate(t *testing.T) {
	src, err := os.ReadFile(specPath)
	if err != nil {
		t.Fatal(err)
	}
	want, err := specgen.Generate(src, specPath)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("spec_gen.go")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(got, want) {
		return
	}
	gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
	for i := 0; i < len(gl) || i < len(wl); i++ {
		var g, w string
		if i < len(gl) {
			g = gl[i]
		}
		if i < len(wl) {
			w = wl[i]
		}
		if g != w {
			t.Fatalf("spec_gen.go is stale (first difference at line %d:\n committed: %q\n generated: %q)\nrun: go generate ./protocols/amqp/wire", i+1, g, w)
		}
	}
}

// TestSpecCoverage checks every method of the spec against its generated
// type: IDs, name, flags and one struct field per argument.
func TestSpecCoverage(t *testing.T) {
	n := 0
	for _, sm := range allMethods(t) {
		m := NewMethod(uint16(sm.class.ID), uint16(sm.m.ID))
		if m == nil {
			t.Errorf("%s: no generated type", sm.name())
			continue
		}
		n++
		if m.Name() != sm.name() || m.ClassID() != uint16(sm.class.ID) || m.MethodID() != uint16(sm.m.ID) {
			t.Errorf("%s: got %s (%d,%d)", sm.name(), m.Name(), m.ClassID(), m.MethodID())
		}
		if m.Synchronous() != sm.m.Synchronous || m.HasContent() != sm.m.Content {
			t.Errorf("%s: synchronous=%t content=%t, spec says %t %t", sm.name(), m.Synchronous(), m.HasContent(), sm.m.Synchronous, sm.m.Content)
		}
		if got := reflect.TypeOf(m).Elem().NumField(); got != len(sm.m.Arguments) {
			t.Errorf("%s: %d fields for %d arguments", sm.name(), got, len(sm.m.Arguments))
		}
	}
	if n < 60 {
		t.Errorf("only %d methods generated", n)
	}
	for _, want := range []string{"basic.publish", "basic.return", "basic.deliver", "basic.get-ok"} {
		found := false
		for _, sm := range allMethods(t) {
			if sm.name() == want {
				found = NewMethod(uint16(sm.class.ID), uint16(sm.m.ID)).HasContent()
			}
		}
		if !found {
			t.Errorf("%s should carry content", want)
		}
	}
}

func TestReplyCodes(t *testing.T) {
	for _, c := range loadSpec(t).Constants {
		if c.Class == "" {
			continue
		}
		code := uint16(c.Value)
		want := strings.ReplaceAll(c.Name, "-", "_")
		if got := ReplyText(code); got != want {
			t.Errorf("ReplyText(%d) = %q, want %q", code, got, want)
		}
		if got := IsHardError(code); got != (c.Class == "hard-error") {
			t.Errorf("IsHardError(%d) = %t, spec class %s", code, got, c.Class)
		}
	}
	if ReplyText(ReplySuccess) != "REPLY_SUCCESS" || ReplyText(999) != "" {
		t.Error("ReplyText of REPLY_SUCCESS or an unknown code")
	}
	for code, want := range map[uint16]bool{FrameError: true, SyntaxError: true, CommandInvalid: true, ChannelError: true,
		UnexpectedFrame: true, NotAllowed: true, NotImplemented: true, InternalError: true, NotFound: false, PreconditionFailed: false} {
		if IsHardError(code) != want {
			t.Errorf("IsHardError(%d) != %t", code, want)
		}
	}
	if FrameEnd != 0xce || FrameMethod != 1 || FrameHeader != 2 || FrameBody != 3 || FrameHeartbeat != 8 || FrameMinSize != 4096 {
		t.Error("frame constants")
	}
}
