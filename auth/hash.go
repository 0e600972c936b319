package auth

import (
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"sync/atomic"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// Hashing algorithms a stored password hash may use. Bourse writes
// argon2id; the others are accepted so that users exported from RabbitMQ
// (salted SHA-256, SHA-512 or MD5 in its definitions) or kept as bcrypt
// hashes by other tools can be imported unchanged.
const (
	AlgoArgon2id   = "bourse_argon2id"                // PHC string "$argon2id$v=19$m=…,t=…,p=…$salt$hash"
	AlgoBcrypt     = "bcrypt"                         // "$2a$…", "$2b$…", "$2y$…"
	AlgoRabbitSHA2 = "rabbit_password_hashing_sha256" // base64(salt[4] ‖ sha256(salt ‖ password))
	AlgoRabbitSHA5 = "rabbit_password_hashing_sha512" // base64(salt[4] ‖ sha512(salt ‖ password))
	AlgoRabbitMD5  = "rabbit_password_hashing_md5"    // base64(salt[4] ‖ md5(salt ‖ password))
	algoNone       = "none"                           // no password: only EXTERNAL (certificate) logins
)

// Argon2id parameters: OWASP's minimum (19 MiB, 2 passes, 1 lane). A login
// costs a few tens of milliseconds once; repeated logins with the same
// credentials are answered from the verified-credentials cache.
const (
	argonTime    = 2
	argonMemory  = 19 * 1024
	argonThreads = 1
	argonKeyLen  = 32
	saltLen      = 16
)

var b64 = base64.RawStdEncoding

// HashPassword returns an argon2id PHC string for password.
func HashPassword(password string) (string, error) {
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("auth: salt: %w", err)
	}
	key := argon2.IDKey([]byte(password), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads,
		b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// checkHash validates the shape of a stored hash for algo, so a broken
// import fails when it is made, not at the user's first login.
func checkHash(algo, h string) error {
	switch algo {
	case AlgoArgon2id:
		_, _, _, err := parseArgon2(h)
		return err
	case AlgoBcrypt:
		if _, err := bcrypt.Cost([]byte(h)); err != nil {
			return fmt.Errorf("bcrypt hash: %w", err)
		}
		return nil
	case AlgoRabbitSHA2, AlgoRabbitSHA5, AlgoRabbitMD5:
		raw, err := base64.StdEncoding.DecodeString(h)
		if err != nil {
			return fmt.Errorf("password_hash is not base64: %w", err)
		}
		if len(raw) != 4+rabbitHash(algo)().Size() {
			return fmt.Errorf("password_hash has %d bytes, want %d for %s", len(raw), 4+rabbitHash(algo)().Size(), algo)
		}
		return nil
	case algoNone:
		if h != "" {
			return errors.New("a user without a password has an empty password_hash")
		}
		return nil
	}
	return fmt.Errorf("unknown hashing_algorithm %q", algo)
}

func rabbitHash(algo string) func() hash.Hash {
	switch algo {
	case AlgoRabbitSHA5:
		return sha512.New
	case AlgoRabbitMD5:
		return md5.New
	}
	return sha256.New
}

type argonParams struct {
	m    uint32
	t    uint32
	p    uint8
	salt []byte
}

func parseArgon2(h string) (argonParams, []byte, int, error) {
	var a argonParams
	parts := strings.Split(h, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return a, nil, 0, errors.New("not an argon2id PHC string")
	}
	if parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return a, nil, 0, fmt.Errorf("argon2id version %q not supported", parts[2])
	}
	var m, t, p uint64
	for _, kv := range strings.Split(parts[3], ",") {
		k, v, ok := strings.Cut(kv, "=")
		n, err := strconv.ParseUint(v, 10, 32)
		if !ok || err != nil {
			return a, nil, 0, fmt.Errorf("argon2id parameter %q", kv)
		}
		switch k {
		case "m":
			m = n
		case "t":
			t = n
		case "p":
			p = n
		}
	}
	// Bounds keep a hostile import from costing the broker a gigabyte or a
	// minute per login.
	if m < 8 || m > 1<<20 || t < 1 || t > 16 || p < 1 || p > 16 {
		return a, nil, 0, fmt.Errorf("argon2id parameters m=%d,t=%d,p=%d out of range", m, t, p)
	}
	salt, err := b64.DecodeString(parts[4])
	if err != nil || len(salt) < 8 {
		return a, nil, 0, errors.New("argon2id salt")
	}
	key, err := b64.DecodeString(parts[5])
	if err != nil || len(key) < 16 || len(key) > 64 {
		return a, nil, 0, errors.New("argon2id key")
	}
	return argonParams{m: uint32(m), t: uint32(t), p: uint8(p), salt: salt}, key, len(key), nil
}

// hashes counts password hash computations (for tests).
var hashes atomic.Int64

// verify reports whether password matches the stored hash.
func verify(algo, h, password string) bool {
	hashes.Add(1)
	switch algo {
	case AlgoArgon2id:
		a, key, n, err := parseArgon2(h)
		if err != nil {
			return false
		}
		got := argon2.IDKey([]byte(password), a.salt, a.t, a.m, a.p, uint32(n))
		return subtle.ConstantTimeCompare(got, key) == 1
	case AlgoBcrypt:
		return bcrypt.CompareHashAndPassword([]byte(h), []byte(password)) == nil
	case AlgoRabbitSHA2, AlgoRabbitSHA5, AlgoRabbitMD5:
		raw, err := base64.StdEncoding.DecodeString(h)
		if err != nil || len(raw) < 4 {
			return false
		}
		hh := rabbitHash(algo)()
		hh.Write(raw[:4])
		hh.Write([]byte(password))
		return subtle.ConstantTimeCompare(hh.Sum(nil), raw[4:]) == 1
	}
	return false // algoNone: no password ever matches
}

func b64std(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
