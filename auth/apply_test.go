package auth

import (
	"net"
	"reflect"
	"testing"
)

// mirror is a Persister that hands every write to another store through
// ApplyRecord, as the cluster's watcher does.
type mirror struct{ to *Store }

func (m mirror) UpdateRecords(bucket string, puts map[string][]byte, deletes []string) error {
	for k, v := range puts {
		if err := m.to.ApplyRecord(bucket, k, v); err != nil {
			return err
		}
	}
	for _, k := range deletes {
		if err := m.to.ApplyRecord(bucket, k, nil); err != nil {
			return err
		}
	}
	return nil
}

func (m mirror) ForEachRecord(string, func(string, []byte) error) error { return nil }

// TestApplyRecordMirrorsEveryChange: a store fed only with another's
// records (ApplyRecord) ends with the same users, permissions and topic
// permissions through additions, changes and every kind of deletion.
func TestApplyRecordMirrorsEveryChange(t *testing.T) {
	replica, _ := Open(nil, Options{})
	s, _ := Open(mirror{replica}, Options{})
	same := func(when string) {
		t.Helper()
		if !reflect.DeepEqual(s.Users(), replica.Users()) || !reflect.DeepEqual(s.Permissions(), replica.Permissions()) ||
			!reflect.DeepEqual(s.TopicPermissions(), replica.TopicPermissions()) {
			t.Fatalf("%s: replica differs:\n%+v %+v %+v\n%+v %+v %+v", when, s.Users(), s.Permissions(), s.TopicPermissions(),
				replica.Users(), replica.Permissions(), replica.TopicPermissions())
		}
	}
	for _, u := range []string{"alice", "bob"} {
		if err := s.PutUser(u, "pw-"+u, []string{"management"}); err != nil {
			t.Fatal(err)
		}
		for _, vh := range []string{"/", "prod"} {
			if err := s.SetPermissions(Permission{User: u, VHost: vh, Configure: "^" + u, Write: ".*", Read: ".*"}); err != nil {
				t.Fatal(err)
			}
			for _, x := range []string{"amq.topic", "events"} {
				if err := s.SetTopicPermissions(TopicPermission{User: u, VHost: vh, Exchange: x, Write: "^a", Read: "^b"}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	same("after adding")
	if p, err := replica.Login("alice", "pw-alice", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
		t.Fatalf("replica login: %v", err)
	} else {
		p.Close()
	}
	if err := s.ClearPermissions("alice", "prod"); err != nil {
		t.Fatal(err)
	}
	if err := s.ClearTopicPermissions("bob", "/", "events"); err != nil {
		t.Fatal(err)
	}
	same("after clearing")
	if err := s.DeleteUser("bob"); err != nil {
		t.Fatal(err)
	}
	same("after deleting a user")
	if len(replica.Users()) != 1 || len(replica.Permissions()) != 1 || len(replica.TopicPermissions()) != 4 {
		t.Fatalf("replica keeps %d users, %d permissions, %d topic permissions", len(replica.Users()), len(replica.Permissions()), len(replica.TopicPermissions()))
	}
	if err := replica.ApplyRecord("no-such-bucket", "k", []byte("{}")); err == nil {
		t.Fatal("a record of an unknown bucket was applied")
	}
}
