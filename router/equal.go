package router

import (
	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/router/match"
)

// tablesEqual compares two argument tables by AMQP value (match.ValuesEqual):
// clients encode the same number in different integer widths, and a
// redeclare with x-message-ttl 100 as int32 or int64 is the same declare.
func tablesEqual(a, b core.Table) bool {
	if len(a) != len(b) {
		return false
	}
	for k, av := range a {
		bv, ok := b[k]
		if !ok || !match.ValuesEqual(av, bv) {
			return false
		}
	}
	return true
}
