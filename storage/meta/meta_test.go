package meta

import (
	"reflect"
	"testing"

	"github.com/bourse-mq/bourse/core"
)

func TestPersistAndReload(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	args := core.Table{"x-message-ttl": int32(5), "nested": core.Table{"a": []any{int64(1), "b"}}}
	steps := []error{
		s.PutVHost("v"),
		s.PutExchange("v", core.ExchangeInfo{Name: "x", Type: "topic", Durable: true, Args: core.Table{"alternate-exchange": "ae"}}),
		s.PutQueue("v", core.QueueInfo{Name: "q", Durable: true, Args: args}),
		s.PutQueue("v", core.QueueInfo{Name: "gone", Durable: true}),
		s.DeleteQueue("v", "gone"),
		s.PutBinding("v", core.Binding{Source: "x", Dest: core.Dest{Kind: core.ToQueue, Name: "q"}, Key: "a.#"}),
		s.PutBinding("v", core.Binding{Source: "x", Dest: core.Dest{Kind: core.ToQueue, Name: "q"}, Key: "b"}),
		s.DeleteBinding("v", core.Binding{Source: "x", Dest: core.Dest{Kind: core.ToQueue, Name: "q"}, Key: "b"}),
		s.PutVHost("other"),
		s.PutQueue("other", core.QueueInfo{Name: "q2", Durable: true}),
		s.DeleteVHost("other"),
	}
	for i, err := range steps {
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	s.Close()

	s, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(d.VHosts, []string{"v"}) || len(d.Exchanges) != 1 || len(d.Queues) != 1 || len(d.Bindings) != 1 {
		t.Fatalf("loaded %+v", d)
	}
	if !reflect.DeepEqual(d.Queues[0].Args, args) {
		t.Fatalf("args %#v", d.Queues[0].Args)
	}
	if d.Bindings[0].Key != "a.#" || d.Exchanges[0].Args.String("alternate-exchange") != "ae" {
		t.Fatalf("loaded %+v", d)
	}
}

func TestSecondOpenTimesOut(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := Open(dir); err == nil {
		t.Fatal("second open of the same store succeeded")
	}
}

func TestRecords(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateRecords("sessions", map[string][]byte{"a": []byte("1"), "b\x00c": []byte("2")}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateRecords("sessions", map[string][]byte{"d": []byte("4")}, []string{"a"}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got := map[string]string{}
	if err := s.ForEachRecord("sessions", func(k string, v []byte) error { got[k] = string(v); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["b\x00c"] != "2" || got["d"] != "4" {
		t.Fatalf("records after reopen: %q", got)
	}
	if err := s.ForEachRecord("none", func(string, []byte) error { t.Fatal("record in an absent bucket"); return nil }); err != nil {
		t.Fatal(err)
	}
}
