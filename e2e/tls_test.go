package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/go-stomp/stomp/v3"
	amqp "github.com/rabbitmq/amqp091-go"
)

// testPKI is a throwaway CA with a server certificate for 127.0.0.1 and a
// client certificate, written as PEM files.
type testPKI struct {
	dir                       string
	ca                        *x509.Certificate
	caKey                     *ecdsa.PrivateKey
	pool                      *x509.CertPool
	caFile, certFile, keyFile string
	clientCert                tls.Certificate
	serverSerial              *big.Int
}

func newPKI(t *testing.T) *testPKI {
	t.Helper()
	p := &testPKI{dir: t.TempDir()}
	p.caKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bourse test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &p.caKey.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	p.ca, _ = x509.ParseCertificate(der)
	p.pool = x509.NewCertPool()
	p.pool.AddCert(p.ca)
	p.caFile = filepath.Join(p.dir, "ca.pem")
	os.WriteFile(p.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	p.certFile, p.keyFile = filepath.Join(p.dir, "server.pem"), filepath.Join(p.dir, "server.key")
	p.issueServer(t, 100)
	cder, ckey := p.issue(t, 200, "guest", x509.ExtKeyUsageClientAuth)
	p.clientCert = tls.Certificate{Certificate: [][]byte{cder}, PrivateKey: ckey}
	return p
}

func (p *testPKI) issue(t *testing.T, serial int64, cn string, usage x509.ExtKeyUsage) ([]byte, *ecdsa.PrivateKey) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{usage}, KeyUsage: x509.KeyUsageDigitalSignature,
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	return der, key
}

// issueServer (re)writes the server certificate files.
func (p *testPKI) issueServer(t *testing.T, serial int64) {
	der, key := p.issue(t, serial, "127.0.0.1", x509.ExtKeyUsageServerAuth)
	kb, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(p.keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	os.WriteFile(p.certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	p.serverSerial = big.NewInt(serial)
}

func (p *testPKI) client(withCert bool) *tls.Config {
	c := &tls.Config{RootCAs: p.pool, ServerName: "127.0.0.1"}
	if withCert {
		c.Certificates = []tls.Certificate{p.clientCert}
	}
	return c
}

func tlsArgs(p *testPKI, clientAuth string) []string {
	return []string{"--tls-cert", p.certFile, "--tls-key", p.keyFile, "--tls-ca", p.caFile, "--tls-client-auth", clientAuth,
		"--amqps-addr", "127.0.0.1:0", "--mqtts-addr", "127.0.0.1:0", "--stomps-addr", "127.0.0.1:0", "--https-addr", "127.0.0.1:0"}
}

// TestTLSListeners: AMQPS, MQTTS, STOMP over TLS and HTTPS with the
// standard clients; the certificate is reloaded on SIGHUP.
func TestTLSListeners(t *testing.T) {
	p := newPKI(t)
	br := Start(t, tlsArgs(p, "optional")...)
	for _, k := range []string{"amqps", "mqtts", "stomps", "https"} {
		if br.Addrs[k] == "" {
			t.Fatalf("no %s listener in %v", k, br.Addrs)
		}
	}
	// AMQPS with amqp091-go.
	conn, err := amqp.DialTLS("amqps://guest:guest@"+br.Addrs["amqps"]+"/", p.client(false))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, _ := conn.Channel()
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	ch.Publish("", q.Name, false, false, amqp.Publishing{Body: []byte("over tls")})
	var got amqp.Delivery
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		var ok bool
		if got, ok, _ = ch.Get(q.Name, true); ok {
			break
		}
	}
	if string(got.Body) != "over tls" {
		t.Fatalf("AMQPS round trip: %q", got.Body)
	}
	// MQTTS with paho, a client certificate offered (optional mode).
	nc, err := tls.Dial("tcp", br.Addrs["mqtts"], p.client(true))
	if err != nil {
		t.Fatal(err)
	}
	msgs := make(chan *paho.Publish, 1)
	mc := paho.NewClient(paho.ClientConfig{Conn: &lockedConn{Conn: nc}, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
		func(pr paho.PublishReceived) (bool, error) { msgs <- pr.Packet; return true, nil }}})
	ctx := context.Background()
	if ca, err := mc.Connect(ctx, &paho.Connect{ClientID: "tls", CleanStart: true, KeepAlive: 30,
		Username: "guest", UsernameFlag: true, Password: []byte("guest"), PasswordFlag: true}); err != nil || ca.ReasonCode != 0 {
		t.Fatalf("MQTTS connect: %v", err)
	}
	defer mc.Disconnect(&paho.Disconnect{})
	Subscribe(t, mc, "secure/#")
	mc.Publish(ctx, &paho.Publish{Topic: "secure/x", QoS: 1, Payload: []byte("mqtts")})
	if m := recvMQTT(t, msgs); string(m.Payload) != "mqtts" {
		t.Fatalf("MQTTS: %q", m.Payload)
	}
	// STOMP over TLS with go-stomp.
	sc, err := tls.Dial("tcp", br.Addrs["stomps"], p.client(false))
	if err != nil {
		t.Fatal(err)
	}
	st, err := stomp.Connect(sc, stomp.ConnOpt.Login("guest", "guest"), stomp.ConnOpt.Host("/"))
	if err != nil {
		t.Fatal(err)
	}
	sub, _ := st.Subscribe("/queue/tls", stomp.AckAuto)
	st.Send("/queue/tls", "text/plain", []byte("stomps"))
	if m := recvSTOMP(t, sub); string(m.Body) != "stomps" {
		t.Fatalf("STOMP over TLS: %q", m.Body)
	}
	st.Disconnect()
	// HTTPS.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: p.client(false)}}
	resp, err := hc.Get("https://" + br.Addrs["https"] + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "ok\n" {
		t.Fatalf("HTTPS /healthz: %d %q", resp.StatusCode, body)
	}
	// A plain client on the TLS port fails the handshake, not the broker.
	if raw, err := net.Dial("tcp", br.Addrs["amqps"]); err == nil {
		raw.Write([]byte("AMQP\x00\x00\x09\x01"))
		raw.SetReadDeadline(time.Now().Add(2 * time.Second))
		b := make([]byte, 8)
		if n, _ := raw.Read(b); n > 0 && string(b[:4]) == "AMQP" {
			t.Fatal("plain AMQP spoken on the TLS port")
		}
		raw.Close()
	}

	// Certificate reload without a restart.
	p.issueServer(t, 101)
	br.cmd.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := tls.Dial("tcp", br.Addrs["https"], p.client(false))
		if err != nil {
			t.Fatal(err)
		}
		serial := c.ConnectionState().PeerCertificates[0].SerialNumber
		c.Close()
		if serial.Cmp(big.NewInt(101)) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("certificate not reloaded: serial %v", serial)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestMutualTLSRequired: with client_auth required, a client without a
// certificate signed by the CA cannot connect; one with it can.
func TestMutualTLSRequired(t *testing.T) {
	p := newPKI(t)
	br := Start(t, tlsArgs(p, "required")...)
	if _, err := amqp.DialTLS("amqps://guest:guest@"+br.Addrs["amqps"]+"/", p.client(false)); err == nil {
		t.Fatal("AMQPS without a client certificate was accepted")
	}
	conn, err := amqp.DialTLS("amqps://guest:guest@"+br.Addrs["amqps"]+"/", p.client(true))
	if err != nil {
		t.Fatalf("AMQPS with a client certificate: %v", err)
	}
	conn.Close()
	if c, err := tls.Dial("tcp", br.Addrs["stomps"], p.client(false)); err == nil {
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("STOMP+TLS without a client certificate was accepted")
		}
		c.Close()
	}
}

// TestCertificateLogin: with tls.cert_login, a client presenting a
// verified certificate and no credentials is the user its CN names, on
// AMQP (the EXTERNAL mechanism), MQTT (no user name) and STOMP (no login).
// A certificate whose CN is no user is refused.
func TestCertificateLogin(t *testing.T) {
	p := newPKI(t)
	br := Start(t, append(tlsArgs(p, "optional"), "--tls-cert-login")...)
	rh := func(method, path, body string) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+br.Addrs["http"]+path, strings.NewReader(body))
		req.SetBasicAuth("guest", "guest")
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode/100 != 2 {
			t.Fatalf("%s %s: %v %v", method, path, err, resp)
		}
		resp.Body.Close()
	}
	rh("PUT", "/api/users/device-7", `{"password_hash":"","tags":""}`)
	rh("PUT", "/api/permissions/%2F/device-7", `{"configure":"^device-7\\.","write":".*","read":"^device-7\\."}`)
	der, key := p.issue(t, 300, "device-7", x509.ExtKeyUsageClientAuth)
	dev := &tls.Config{RootCAs: p.pool, ServerName: "127.0.0.1", Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}

	conn, err := amqp.DialTLS_ExternalAuth("amqps://"+br.Addrs["amqps"]+"/", dev)
	if err != nil {
		t.Fatalf("AMQP EXTERNAL: %v", err)
	}
	ch, _ := conn.Channel()
	if _, err := ch.QueueDeclare("device-7.inbox", false, false, true, false, nil); err != nil {
		t.Fatalf("declare as device-7: %v", err)
	}
	ch, _ = conn.Channel()
	if _, err := ch.QueueDeclare("other", false, false, true, false, nil); err == nil {
		t.Fatal("device-7 declared outside its permissions: it is not guest")
	}
	conn.Close()

	// MQTT over TLS, no user name.
	nc, err := tls.Dial("tcp", br.Addrs["mqtts"], dev)
	if err != nil {
		t.Fatal(err)
	}
	mc := paho.NewClient(paho.ClientConfig{Conn: &lockedConn{Conn: nc}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if ca, err := mc.Connect(ctx, &paho.Connect{ClientID: "dev7", CleanStart: true, KeepAlive: 30}); err != nil || ca.ReasonCode != 0 {
		t.Fatalf("MQTT with a certificate: %v %+v", err, ca)
	}
	_ = mc.Disconnect(&paho.Disconnect{})

	// STOMP over TLS, no login: the connection shows up as device-7.
	sn, err := tls.Dial("tcp", br.Addrs["stomps"], dev)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := stomp.Connect(sn, stomp.ConnOpt.Host("/"), stomp.ConnOpt.HeartBeat(0, 0))
	if err != nil {
		t.Fatalf("STOMP with a certificate: %v", err)
	}
	req, _ := http.NewRequest("GET", "http://"+br.Addrs["http"]+"/api/connections", nil)
	req.SetBasicAuth("guest", "guest")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `"user":"device-7"`) {
		t.Fatalf("connections: %s", body)
	}
	_ = sc.Disconnect()

	// A verified certificate whose CN is no user: refused.
	der2, key2 := p.issue(t, 301, "stranger", x509.ExtKeyUsageClientAuth)
	stranger := &tls.Config{RootCAs: p.pool, ServerName: "127.0.0.1", Certificates: []tls.Certificate{{Certificate: [][]byte{der2}, PrivateKey: key2}}}
	var ae *amqp.Error
	if _, err := amqp.DialTLS_ExternalAuth("amqps://"+br.Addrs["amqps"]+"/", stranger); !errors.As(err, &ae) || ae.Code != amqp.AccessRefused {
		t.Fatalf("unknown certificate user: %v", err)
	}
}

// lockedConn lets paho.golang write each packet whole over TLS. paho
// writes a packet as net.Buffers: one writev on a TCP socket, but one Write
// per piece on a tls.Conn, so its pinger (which sends its first PINGREQ at
// once, from its own goroutine) could land in the middle of a SUBSCRIBE,
// which the broker then rightly refuses as malformed. paho takes the lock
// of a connection that is a sync.Locker around each packet.
type lockedConn struct {
	net.Conn
	sync.Mutex
}
