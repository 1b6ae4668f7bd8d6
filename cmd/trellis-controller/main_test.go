package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/pki"
)

const mesh = `
services:
  - name: books
    namespace: demo
    ports: [{port: 80, protocol: http}]
workloads:
  - name: books-v1
    namespace: demo
    serviceAccount: books
    token: binary-test-token-0123456789
    proxyAddr: 127.0.0.1:4243
    endpoints: [{service: books, port: 80, targetPort: 9101}]
`

var servingLine = regexp.MustCompile(`msg="controller serving" grpc=(\S+) admin=(\S+)`)

// TestBinary runs the real trellis-controller process the way `trellis demo`
// does, waits for /ready and anchor.crt, and makes a Certify call.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "trellis-controller")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	meshPath := filepath.Join(dir, "mesh.yaml")
	if err := os.WriteFile(meshPath, []byte(mesh), 0o644); err != nil {
		t.Fatal(err)
	}
	stateDir := filepath.Join(dir, "state")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "local", "--config", meshPath, "--state-dir", stateDir,
		"--listen", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--log-level", "debug")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	addrs := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			t.Log(line)
			if strings.Contains(line, "binary-test-token") {
				t.Error("a token was logged")
			}
			if m := servingLine.FindStringSubmatch(line); m != nil {
				addrs <- m[1:]
			}
		}
		exited <- cmd.Wait()
	}()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("controller exited with %v after SIGTERM, want 0", err)
			}
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Error("controller did not exit on SIGTERM")
		}
	}()
	var grpcAddr, adminAddr string
	select {
	case a := <-addrs:
		grpcAddr, adminAddr = a[0], a[1]
	case err := <-exited:
		t.Fatalf("controller exited early: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("controller did not report its addresses")
	}

	resp, err := http.Get("http://" + adminAddr + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/ready = %d %s", resp.StatusCode, body)
	}

	anchorPEM, err := os.ReadFile(filepath.Join(stateDir, "anchor.crt"))
	if err != nil {
		t.Fatal(err)
	}
	anchors, err := pki.ParseCertsPEM(anchorPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(anchors[0])
	// SPIFFE verification replaces the hostname check; it is not skipped.
	tlsCfg := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			_, err := pki.Verify(raw, pool, x509.ExtKeyUsageServerAuth, identity.Controller("cluster.local"), time.Now())
			return err
		},
	}
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	id := identity.ID{TrustDomain: "cluster.local", Namespace: "demo", ServiceAccount: "books"}
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
	defer ccancel()
	cr, err := apiv1.NewIdentityClient(conn).Certify(cctx, &apiv1.CertifyRequest{
		Identity: id.String(), Token: []byte("binary-test-token-0123456789"), CertificateSigningRequest: csr,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pki.Verify(cr.Chain, pool, x509.ExtKeyUsageClientAuth, id, time.Now()); err != nil {
		t.Fatal(err)
	}
}

func TestBinaryRefusesBadConfig(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "trellis-controller")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	meshPath := filepath.Join(dir, "mesh.yaml")
	if err := os.WriteFile(meshPath, []byte("services: [{name: Bad}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "local", "--config", meshPath, "--state-dir", filepath.Join(dir, "s"),
		"--listen", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0").CombinedOutput()
	if err == nil {
		t.Fatalf("bad config accepted:\n%s", out)
	}
	if !strings.Contains(string(out), "services[0].name") {
		t.Fatalf("error does not name the field:\n%s", out)
	}
}
