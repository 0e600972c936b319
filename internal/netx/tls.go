package netx

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"time"
)

// TLSOptions configure the TLS listeners.
type TLSOptions struct {
	CertFile, KeyFile string
	// CAFile holds the CAs that sign client certificates (mTLS).
	CAFile string
	// ClientAuth is "none" (default), "optional" (verified when sent) or
	// "required".
	ClientAuth string
}

// Certs serves the listeners' certificate and reloads it from disk without
// a restart: on Reload (SIGHUP), and when the files change (checked at most
// every few seconds, on handshakes).
type Certs struct {
	opts    TLSOptions
	cur     atomic.Pointer[tls.Certificate]
	stamp   atomic.Pointer[[2]time.Time]
	checked atomic.Int64 // unix ns of the last mtime check
}

// NewTLSConfig loads the certificate (and client CAs) and returns a server
// TLS config whose certificate follows the files.
func NewTLSConfig(o TLSOptions) (*tls.Config, *Certs, error) {
	c := &Certs{opts: o}
	if err := c.Reload(); err != nil {
		return nil, nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: c.get}
	switch o.ClientAuth {
	case "", "none":
	case "optional", "required":
		if o.CAFile == "" {
			return nil, nil, fmt.Errorf("tls: client_auth %s needs ca_file", o.ClientAuth)
		}
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, nil, fmt.Errorf("tls: read ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("tls: no certificate in ca_file %s", o.CAFile)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
		if o.ClientAuth == "required" {
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
		}
	default:
		return nil, nil, fmt.Errorf("tls: client_auth %q: want none, optional or required", o.ClientAuth)
	}
	return cfg, c, nil
}

// Reload reads the certificate and key again. On error the old ones stay.
func (c *Certs) Reload() error {
	cert, err := tls.LoadX509KeyPair(c.opts.CertFile, c.opts.KeyFile)
	if err != nil {
		return fmt.Errorf("tls: load certificate: %w", err)
	}
	c.cur.Store(&cert)
	st := c.mtimes()
	c.stamp.Store(&st)
	return nil
}

// Certificate returns the certificate in use.
func (c *Certs) Certificate() *tls.Certificate { return c.cur.Load() }

func (c *Certs) mtimes() [2]time.Time {
	var st [2]time.Time
	for i, f := range []string{c.opts.CertFile, c.opts.KeyFile} {
		if fi, err := os.Stat(f); err == nil {
			st[i] = fi.ModTime()
		}
	}
	return st
}

func (c *Certs) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	now := time.Now().UnixNano()
	if last := c.checked.Load(); now-last > int64(2*time.Second) && c.checked.CompareAndSwap(last, now) {
		if st := c.mtimes(); st != *c.stamp.Load() {
			_ = c.Reload() // a half-written pair fails to parse: keep the old one, retry later
		}
	}
	return c.cur.Load(), nil
}

// PeerCommonName returns the common name of a TLS connection's client
// certificate when the server verified it against its client CAs (the
// user name of RabbitMQ's EXTERNAL mechanism), finishing the handshake if
// it has not run yet. ok is false on plain TCP, without a certificate, or
// when the certificate was not verified.
func PeerCommonName(nc net.Conn) (cn string, ok bool) {
	tc, isTLS := nc.(*tls.Conn)
	if !isTLS {
		return "", false
	}
	if err := tc.Handshake(); err != nil {
		return "", false
	}
	st := tc.ConnectionState()
	if len(st.VerifiedChains) == 0 || len(st.PeerCertificates) == 0 {
		return "", false
	}
	cn = st.PeerCertificates[0].Subject.CommonName
	return cn, cn != ""
}
