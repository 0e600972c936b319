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
