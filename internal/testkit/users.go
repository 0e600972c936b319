package testkit

import (
	"testing"

	"github.com/bourse-mq/bourse/auth"
)

// Users returns an in-memory user store holding guest/guest, an
// administrator with every permission on "/", as the broker's first start
// makes it; tests add the users they check.
func Users(t *testing.T) *auth.Store {
	t.Helper()
	s, err := auth.Open(nil, auth.Options{})
	Must(t, err)
	Must(t, s.PutUser("guest", "guest", []string{"administrator"}))
	Must(t, s.SetPermissions(auth.Permission{User: "guest", VHost: "/", Configure: ".*", Write: ".*", Read: ".*"}))
	return s
}

// Must fails the test on the first non-nil error.
func Must(t *testing.T, errs ...error) {
	t.Helper()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}
