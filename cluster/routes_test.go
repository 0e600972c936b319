package cluster_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/bourse-mq/bourse/cluster"
	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/router"
)

// routePKI writes a CA and one certificate for 127.0.0.1, valid to accept
// and to dial routes, and returns the files.
func routePKI(t *testing.T) (cert, key, ca string) {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "routes CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	nodeKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	nodeTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "node"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	nodeDER, err := x509.CreateCertificate(rand.Reader, nodeTmpl, caCert, &nodeKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(nodeKey)
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return write("node.pem", "CERTIFICATE", nodeDER), write("node.key", "EC PRIVATE KEY", keyDER), write("ca.pem", "CERTIFICATE", caDER)
}

// startSecured starts three embedded nodes whose routes use mod's settings
// and checks that they form one cluster (a declare on node 0 reaches node
// 2). It returns node 0's route address.
func startSecured(t *testing.T, mod func(*cluster.Options)) string {
	t.Helper()
	c := newTestCluster(t, 3, func(_ int, o *cluster.Options) { mod(o) })
	b0, b2 := c.attach(0), c.attach(2)
	if err := vhost(t, b0, "/").DeclareExchange(router.ExchangeDecl{ExchangeInfo: core.ExchangeInfo{Name: "secured", Type: "fanout", Durable: true}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the exchange on node 2", func() bool { return hasExchange(b2, "/", "secured") })
	return c.opts[0].RouteListen
}

// intruder runs a NATS server that tries to join the cluster through
// route with creds (nil: none) and no TLS, and reports whether it still
// has a route after two seconds.
func intruder(t *testing.T, route string, creds *url.Userinfo) bool {
	t.Helper()
	port := freePorts(t, 1)[0]
	u := &url.URL{Scheme: "nats", Host: route, User: creds}
	srv, err := server.NewServer(&server.Options{ServerName: "intruder", Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true,
		Cluster: server.ClusterOpts{Name: "test", Host: "127.0.0.1", Port: port}, Routes: []*url.URL{u}})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	// A refused route can show for a moment, during its handshake: a
	// server has joined when its routes are still up two seconds on.
	time.Sleep(2 * time.Second)
	for range 3 {
		if srv.NumRoutes() == 0 {
			return false
		}
		time.Sleep(200 * time.Millisecond)
	}
	return true
}

// TestRoutesRequireCredentials: with route_user/route_password the nodes
// form their cluster, and a server without the credentials cannot join.
func TestRoutesRequireCredentials(t *testing.T) {
	route := startSecured(t, func(o *cluster.Options) { o.RouteUser, o.RoutePassword = "route", "s3cret" })
	if intruder(t, route, nil) {
		t.Fatal("a server without credentials joined the cluster")
	}
	if intruder(t, route, url.UserPassword("route", "wrong")) {
		t.Fatal("a server with a wrong password joined the cluster")
	}
}

// TestRoutesOverMutualTLS: with route TLS the nodes form their cluster over
// TLS, and a server that knows the credentials but has no certificate
// cannot join.
func TestRoutesOverMutualTLS(t *testing.T) {
	cert, key, ca := routePKI(t)
	route := startSecured(t, func(o *cluster.Options) {
		o.RouteUser, o.RoutePassword = "route", "s3cret"
		o.RouteTLSCertFile, o.RouteTLSKeyFile, o.RouteTLSCAFile = cert, key, ca
	})
	if intruder(t, route, url.UserPassword("route", "s3cret")) {
		t.Fatal("a server without TLS joined the cluster")
	}
}

// TestNATSModeOverMutualTLS: a gateway (mode nats) reaches a JetStream
// server that requires TLS with client certificates when it is given the
// CA and its certificate, and cannot without them.
func TestNATSModeOverMutualTLS(t *testing.T) {
	cert, key, ca := routePKI(t)
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: cert, KeyFile: key, CaFile: ca, Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true,
		StoreDir: t.TempDir(), NoSigs: true, NoLog: true, TLSConfig: tc, TLSVerify: true, TLSTimeout: 5})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	url := "tls://" + srv.Addr().String()
	n, err := cluster.Start(context.Background(), cluster.Options{Mode: cluster.ModeNATS, URLs: []string{url},
		TLSCAFile: ca, TLSCertFile: cert, TLSKeyFile: key, NodeName: "gw", Logger: quiet(), StartTimeout: 20 * time.Second})
	if err != nil {
		t.Fatalf("gateway with the CA and a certificate: %v", err)
	}
	n.Close()
	if _, err := cluster.Start(context.Background(), cluster.Options{Mode: cluster.ModeNATS, URLs: []string{url},
		TLSCAFile: ca, NodeName: "gw2", Logger: quiet(), StartTimeout: 3 * time.Second}); err == nil {
		t.Fatal("a gateway without a client certificate started")
	}
}
