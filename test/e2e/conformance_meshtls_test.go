package e2e

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/pki"
	"github.com/trellis-mesh/trellis/proxy/forward"
	"github.com/trellis-mesh/trellis/proxy/meshtls"
	"github.com/trellis-mesh/trellis/proxy/transport"
	"github.com/trellis-mesh/trellis/test/harness"
)

// startMeshShim lets a plain-text HTTP/2 client (h2spec, which cannot
// present a client certificate) speak to a server proxy's mesh HTTP/2
// server as a peer proxy does: it accepts TCP on loopback and relays each
// connection byte for byte over mesh mTLS (ALPN h2, SNI of serverID) to
// target, presenting a certificate for clientID signed by the mesh's own
// issuer. It returns the address to dial.
func startMeshShim(t *testing.T, m *harness.Mesh, clientID, serverID, target string) string {
	t.Helper()
	conf := meshPeerTLS(t, m, clientID, serverID)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { relayOverMeshTLS(c, conf, target) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

func relayOverMeshTLS(c net.Conn, conf *tls.Config, target string) {
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	d := tls.Dialer{NetDialer: &net.Dialer{}, Config: conf}
	up, err := d.DialContext(ctx, "tcp", target)
	cancel()
	if err != nil {
		return // h2spec sees the connection close and reports the case
	}
	// Bounded: h2spec's cases end within seconds; this frees a stuck one.
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	_, _, _ = forward.Splice(c, up)
}

// meshPeerTLS is the client side of mesh TLS for clientID towards
// serverID, with a certificate the controller's issuer (in its state
// directory) signs here, as Identity.Certify would.
func meshPeerTLS(t *testing.T, m *harness.Mesh, clientID, serverID string) *tls.Config {
	t.Helper()
	read := func(name string) []byte {
		data, err := os.ReadFile(filepath.Join(m.StateDir, name))
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	issCerts, err := pki.ParseCertsPEM(read("issuer.crt"))
	if err != nil {
		t.Fatal(err)
	}
	issKey, err := pki.ParseKeyPEM(read("issuer.key"))
	if err != nil {
		t.Fatal(err)
	}
	anchors, err := pki.ParseCertsPEM(read("anchor.crt"))
	if err != nil {
		t.Fatal(err)
	}
	cid, err := identity.Parse(clientID)
	if err != nil {
		t.Fatal(err)
	}
	sid, err := identity.Parse(serverID)
	if err != nil {
		t.Fatal(err)
	}
	iss := &pki.Issuer{Cert: issCerts[0], Key: issKey, Chain: issCerts[1:]}
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := iss.Sign(key.Public(), cid, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	store, err := meshtls.NewStore(cid, anchors)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.SetCertificate(iss.ChainDER(leaf), key); err != nil {
		t.Fatal(err)
	}
	return store.ClientConfig(sid, []string{transport.ALPNHTTP})
}
