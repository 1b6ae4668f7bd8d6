// Package apiservertest gives tests a real Kubernetes API server: the
// cluster named by TRELLIS_KUBECONFIG, or etcd and kube-apiserver started
// on loopback from the test cluster's multi-call binary (TRELLIS_K8S_BIN,
// k8s-all with etcd and kube-apiserver subcommands; test/cluster builds it
// under /var/tmp/trellis-cluster). Without either, tests skip.
//
// A test binary using it calls Stop from TestMain after m.Run, so the
// processes it started end with it.
package apiservertest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

var shared struct {
	once       sync.Once
	kubeconfig string
	err        error
	stop       func()
}

// Stop ends the processes Kubeconfig started, if any.
func Stop() {
	if shared.stop != nil {
		shared.stop()
		shared.stop = nil
	}
}

// Kubeconfig returns the kubeconfig of a real API server, starting one
// the first time when only TRELLIS_K8S_BIN is set, or skips the test.
func Kubeconfig(t testing.TB) string {
	t.Helper()
	if path := os.Getenv("TRELLIS_KUBECONFIG"); path != "" {
		return path
	}
	bin := os.Getenv("TRELLIS_K8S_BIN")
	if bin == "" {
		t.Skip("TRELLIS_KUBECONFIG is not set: run `make cluster-up` and export TRELLIS_KUBECONFIG=<the kubeconfig it prints>, " +
			"or set TRELLIS_K8S_BIN to the k8s-all binary (find /var/tmp/trellis-cluster -name k8s-all) to start etcd and kube-apiserver on loopback")
	}
	shared.once.Do(func() {
		shared.kubeconfig, shared.stop, shared.err = startAPIServer(bin)
	})
	if shared.err != nil {
		t.Fatalf("start kube-apiserver from %s: %v", bin, shared.err)
	}
	return shared.kubeconfig
}

// Start runs etcd and kube-apiserver from bin (the k8s-all multi-call
// binary) outside a test, for benchmarks (bench/ctrlscale); stop ends both
// and removes their directory.
func Start(bin string) (kubeconfig string, stop func(), err error) {
	return startAPIServer(bin)
}

// startAPIServer runs etcd and kube-apiserver on 127.0.0.1 with fresh
// certificates and a service account signing key (for TokenRequest and
// TokenReview), and writes an admin kubeconfig.
func startAPIServer(bin string) (kubeconfig string, stop func(), err error) {
	dir, err := os.MkdirTemp("", "trellis-apiserver-")
	if err != nil {
		return "", nil, err
	}
	type proc struct {
		name string
		pid  int
		done chan struct{} // closed when it has exited
	}
	var procs []proc
	stop = func() {
		for i := len(procs) - 1; i >= 0; i-- {
			p := procs[i]
			_ = syscall.Kill(-p.pid, syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(10 * time.Second):
				_ = syscall.Kill(-p.pid, syscall.SIGKILL)
				<-p.done
			}
		}
		_ = os.RemoveAll(dir)
	}
	defer func() {
		if err != nil {
			stop()
			stop = nil
		}
	}()
	p := func(name string) string { return filepath.Join(dir, name) }

	ca, caKey, err := newTestCert(nil, nil, pkix.Name{CommonName: "trellis-test-ca"}, nil, true, p("ca.crt"), p("ca.key"))
	if err != nil {
		return "", nil, err
	}
	if _, _, err := newTestCert(ca, caKey, pkix.Name{CommonName: "kube-apiserver"}, []net.IP{net.IPv4(127, 0, 0, 1)}, false, p("apiserver.crt"), p("apiserver.key")); err != nil {
		return "", nil, err
	}
	if _, _, err := newTestCert(ca, caKey, pkix.Name{CommonName: "trellis-test-admin", Organization: []string{"system:masters"}}, nil, false, p("admin.crt"), p("admin.key")); err != nil {
		return "", nil, err
	}
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", nil, err
	}
	saDER, err := x509.MarshalPKIXPublicKey(saKey.Public())
	if err != nil {
		return "", nil, err
	}
	if err := os.WriteFile(p("sa.key"), pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(saKey)}), 0o600); err != nil {
		return "", nil, err
	}
	if err := os.WriteFile(p("sa.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saDER}), 0o644); err != nil {
		return "", nil, err
	}

	ports, err := freePorts(3)
	if err != nil {
		return "", nil, err
	}
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	spawn := func(name string, args ...string) error {
		log, err := os.Create(p(name + ".log"))
		if err != nil {
			return err
		}
		defer log.Close()
		cmd := exec.Command(bin, append([]string{name}, args...)...)
		cmd.Stdout, cmd.Stderr = log, log
		// Own process group, killed with the test binary if it dies.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		pr := proc{name: name, pid: cmd.Process.Pid, done: make(chan struct{})}
		go func() { _ = cmd.Wait(); close(pr.done) }()
		procs = append(procs, pr)
		return nil
	}
	if err := spawn("etcd", "--data-dir", p("etcd"), "--listen-client-url", etcdURL,
		"--listen-peer-url", fmt.Sprintf("http://127.0.0.1:%d", ports[1])); err != nil {
		return "", nil, err
	}
	if err := spawn("kube-apiserver",
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", ports[2]), "--advertise-address=127.0.0.1",
		"--tls-cert-file="+p("apiserver.crt"), "--tls-private-key-file="+p("apiserver.key"),
		"--client-ca-file="+p("ca.crt"),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+p("sa.pub"), "--service-account-signing-key-file="+p("sa.key"),
		"--service-cluster-ip-range=10.96.0.0/16",
		"--authorization-mode=RBAC", "--profiling=false", "--cert-dir="+p("apiserver-certs"),
	); err != nil {
		return "", nil, err
	}

	kubeconfig = p("kubeconfig")
	server := fmt.Sprintf("https://127.0.0.1:%d", ports[2])
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {server: %q, certificate-authority: %q}
users:
- name: admin
  user: {client-certificate: %q, client-key: %q}
contexts:
- name: test
  context: {cluster: test, user: admin}
current-context: test
`, server, p("ca.crt"), p("admin.crt"), p("admin.key"))
	if err := os.WriteFile(kubeconfig, []byte(kc), 0o600); err != nil {
		return "", nil, err
	}

	// Wait for /readyz with the admin certificate.
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	admin, err := tls.LoadX509KeyPair(p("admin.crt"), p("admin.key"))
	if err != nil {
		return "", nil, err
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{admin}, MinVersion: tls.VersionTLS12}}}
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(90 * time.Second)
	for {
		for _, pr := range procs {
			select {
			case <-pr.done:
				logs, _ := os.ReadFile(p(pr.name + ".log"))
				return "", nil, fmt.Errorf("%s exited:\n%s", pr.name, tail(logs))
			default:
			}
		}
		resp, err := hc.Get(server + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return kubeconfig, stop, nil
			}
			err = errors.New(resp.Status)
		}
		if time.Now().After(deadline) {
			logs, _ := os.ReadFile(p("kube-apiserver.log"))
			return "", nil, fmt.Errorf("kube-apiserver not ready after 90s (%v); log tail:\n%s", err, tail(logs))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// newTestCert writes a certificate (a CA when isCA) signed by parent, or
// self-signed when parent is nil.
func newTestCert(parent *x509.Certificate, parentKey *ecdsa.PrivateKey, subject pkix.Name, ips []net.IP, isCA bool, certPath, keyPath string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 100))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: subject,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: ips, DNSNames: []string{"localhost"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if isCA {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
		tmpl.ExtKeyUsage, tmpl.DNSNames = nil, nil
	}
	signer, signerKey := parent, parentKey
	if parent == nil {
		signer, signerKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, key.Public(), signerKey)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, nil, err
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

// freePorts finds n free loopback ports. They are closed before use, so
// another process could take one in between; the start then fails with a
// clear log rather than hangs.
func freePorts(n int) ([]int, error) {
	var out []int
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

func tail(b []byte) []byte {
	if len(b) > 4000 {
		return b[len(b)-4000:]
	}
	return b
}
