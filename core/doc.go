// Package core holds Bourse's protocol-neutral message model and error kinds.
//
// Every protocol adapter turns its frames into one immutable *Message, which the
// router shares by reference between every queue and stream it reaches. core
// does no I/O and imports only the standard library; adapters map the error
// kinds defined here to their own wire codes at their edge.
package core
