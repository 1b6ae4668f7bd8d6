package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/trellis-mesh/trellis/install"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/pki"
)

const trustDomain = "cluster.local"

// controller is a running `trellis-controller kubernetes` process.
type controller struct {
	cmd       *exec.Cmd
	grpcAddr  string
	adminAddr string
	issuer    *pki.Issuer
	anchors   *x509.CertPool
	exited    chan error
	liveHeap  atomic.Int64 // MB live after the last GC (gctrace)
	maxLive   atomic.Int64
}

// gcLine is the heap part of a GODEBUG=gctrace=1 line: heap at GC start,
// at GC end, and live (marked) heap, in MB.
var gcLine = regexp.MustCompile(`, (\d+)->(\d+)->(\d+) MB,`)

var servingLine = regexp.MustCompile(`msg="controller serving \(kubernetes mode\)" grpc=(\S+) admin=(\S+)`)

// buildController builds cmd/trellis-controller into dir, unless bin names
// an existing binary.
func buildController(ctx context.Context, bin, dir string) (string, error) {
	if bin != "" {
		return bin, nil
	}
	out := filepath.Join(dir, "trellis-controller")
	b, err := exec.CommandContext(ctx, "go", "build", "-o", out, "github.com/trellis-mesh/trellis/cmd/trellis-controller").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build trellis-controller: %w\n%s", err, b)
	}
	return out, nil
}

// startController writes an issuer as `trellis install` makes it and runs
// the controller binary against kubeconfig through its CLI flags only, so
// the benchmark does not depend on the controller's internal wiring.
func startController(ctx context.Context, log *slog.Logger, bin, dir, kubeconfig string, env []string) (*controller, error) {
	issuerDir, id, err := writeIssuer(dir)
	if err != nil {
		return nil, err
	}
	is, anchors, err := loadIssuer(id)
	if err != nil {
		return nil, err
	}
	logFile, err := os.Create(filepath.Join(dir, "controller.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, bin, "kubernetes", "--kubeconfig", kubeconfig, "--issuer-dir", issuerDir,
		"--trust-domain="+trustDomain, "--listen", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--webhook-addr", "",
		"--sync-timeout", "10m", "--drain-delay", "0s", "--log-level", "info")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// gctrace tells the live heap apart from the garbage GOGC lets pile up.
	cmd.Env = append(append(os.Environ(), "GODEBUG=gctrace=1"), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start controller: %w", err)
	}
	c := &controller{cmd: cmd, issuer: is, anchors: anchors, exited: make(chan error, 1)}
	addrs := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logFile, line)
			if m := servingLine.FindStringSubmatch(line); m != nil {
				addrs <- m[1:]
			}
			if m := gcLine.FindStringSubmatch(line); m != nil {
				live, _ := strconv.ParseInt(m[3], 10, 64)
				c.liveHeap.Store(live)
				if live > c.maxLive.Load() {
					c.maxLive.Store(live)
				}
			}
		}
		_, _ = io.Copy(logFile, stderr)
		logFile.Close()
		c.exited <- cmd.Wait()
	}()
	select {
	case a := <-addrs:
		c.grpcAddr, c.adminAddr = a[0], a[1]
		log.Info("controller serving", "grpc", c.grpcAddr, "admin", c.adminAddr, "pid", cmd.Process.Pid)
		return c, nil
	case err := <-c.exited:
		return nil, fmt.Errorf("controller exited before serving (%v); see %s", err, filepath.Join(dir, "controller.log"))
	case <-ctx.Done():
		c.stop()
		return nil, ctx.Err()
	}
}

// writeIssuer writes an issuer Secret's files as `trellis install` makes
// them (tls.crt, tls.key, ca.crt) into dir/issuer.
func writeIssuer(dir string) (string, install.Identity, error) {
	id, err := install.GenerateIdentity(trustDomain, install.DefaultAnchorValidity, install.DefaultIssuerValidity, time.Now())
	if err != nil {
		return "", install.Identity{}, err
	}
	issuerDir := filepath.Join(dir, "issuer")
	if err := os.Mkdir(issuerDir, 0o700); err != nil {
		return "", install.Identity{}, err
	}
	for name, data := range map[string][]byte{"tls.crt": id.IssuerCertPEM, "tls.key": id.IssuerKeyPEM, "ca.crt": id.TrustAnchorsPEM} {
		if err := os.WriteFile(filepath.Join(issuerDir, name), data, 0o600); err != nil {
			return "", install.Identity{}, err
		}
	}
	return issuerDir, id, nil
}

func loadIssuer(id install.Identity) (*pki.Issuer, *x509.CertPool, error) {
	certs, err := pki.ParseCertsPEM(id.IssuerCertPEM)
	if err != nil {
		return nil, nil, err
	}
	key, err := pki.ParseKeyPEM(id.IssuerKeyPEM)
	if err != nil {
		return nil, nil, err
	}
	roots, err := pki.ParseCertsPEM(id.TrustAnchorsPEM)
	if err != nil {
		return nil, nil, err
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	return &pki.Issuer{Cert: certs[0], Key: key, Chain: certs[1:]}, pool, nil
}

// clientTLS is a proxy's TLS configuration: a workload certificate for id
// signed by the controller's own issuer (as Certify would return it,
// without the token round trip), verifying the controller's SPIFFE
// identity as proxies do.
func (c *controller) clientTLS(id identity.ID) (*tls.Config, error) {
	key, err := pki.GenerateKey()
	if err != nil {
		return nil, err
	}
	leaf, err := c.issuer.Sign(key.Public(), id, time.Hour, time.Now())
	if err != nil {
		return nil, err
	}
	anchors := c.anchors
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{{Certificate: c.issuer.ChainDER(leaf), PrivateKey: key, Leaf: leaf}},
		InsecureSkipVerify: true, // replaced by the SPIFFE verification below
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			_, err := pki.Verify(raw, anchors, x509.ExtKeyUsageServerAuth, identity.Controller(trustDomain), time.Now())
			return err
		},
	}, nil
}

func (c *controller) pid() int { return c.cmd.Process.Pid }

func (c *controller) stop() {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(15 * time.Second):
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		<-c.exited
	}
}

// metrics reads the named gauges and counters (summed over labels) from
// the controller's /metrics.
func (c *controller) metrics(ctx context.Context, names ...string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.adminAddr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	defer resp.Body.Close()
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[n] = true
	}
	out := make(map[string]float64, len(names))
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, rest, _ := strings.Cut(line, " ")
		base, _, _ := strings.Cut(name, "{")
		if !want[base] {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			out[base] += v
		}
	}
	return out, sc.Err()
}
