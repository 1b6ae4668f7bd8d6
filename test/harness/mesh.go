package harness

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/pki"
)

// ReadyTimeout bounds how long a process may take to become ready.
const ReadyTimeout = 20 * time.Second

// Mesh is one controller in local mode, its store file and state directory,
// and the proxies a test starts.
type Mesh struct {
	T     testing.TB
	Bins  Binaries
	Ports *Ports

	Dir       string // everything of this mesh lives below
	StorePath string
	StateDir  string
	LogDir    string

	ControllerAddr      string
	ControllerAdminAddr string

	mu         sync.Mutex
	store      Store
	controller *Process
	restarts   int
}

// NewMesh prepares a mesh in a temporary directory and writes store as its
// store file. Workloads without a token or proxyAddr get fresh ones.
func NewMesh(t testing.TB, bins Binaries, ports *Ports, store Store) *Mesh {
	t.Helper()
	dir := t.TempDir()
	m := &Mesh{
		T:                   t,
		Bins:                bins,
		Ports:               ports,
		Dir:                 dir,
		StorePath:           filepath.Join(dir, "mesh.yaml"),
		StateDir:            filepath.Join(dir, "state"),
		LogDir:              filepath.Join(dir, "logs"),
		ControllerAddr:      ports.Addr(t),
		ControllerAdminAddr: ports.Addr(t),
	}
	if err := os.MkdirAll(m.LogDir, 0o700); err != nil {
		t.Fatal(err)
	}
	for i := range store.Workloads {
		w := &store.Workloads[i]
		if w.Token == "" {
			w.Token = NewToken()
		}
		if w.ProxyAddr == "" {
			w.ProxyAddr = ports.Addr(t)
		}
	}
	m.WriteStore(store)
	return m
}

// TrustDomain is the store's trust domain.
func (m *Mesh) TrustDomain() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.store.TrustDomain == "" {
		return "cluster.local"
	}
	return m.store.TrustDomain
}

// Store returns a copy of the store as last written.
func (m *Mesh) Store() Store {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.store.Clone()
}

// WriteStore replaces the store file atomically (write and rename), as an
// operator's tooling would.
func (m *Mesh) WriteStore(s Store) {
	m.T.Helper()
	data, err := s.Marshal()
	if err != nil {
		m.T.Fatal(err)
	}
	if err := pki.WriteFileAtomic(m.StorePath, data, 0o600); err != nil {
		m.T.Fatalf("write store: %v", err)
	}
	m.mu.Lock()
	m.store = s.Clone()
	m.mu.Unlock()
}

// AnchorPath is the trust anchor file the controller writes.
func (m *Mesh) AnchorPath() string { return filepath.Join(m.StateDir, "anchor.crt") }

// StartController starts the controller (again, after KillController, with
// the same state directory) and waits until it is ready.
func (m *Mesh) StartController() *Process {
	m.T.Helper()
	m.mu.Lock()
	name := "controller"
	if m.restarts > 0 {
		name = fmt.Sprintf("controller-%d", m.restarts)
	}
	m.restarts++
	m.mu.Unlock()
	p := StartProcess(m.T, name, m.LogDir, m.Bins.Controller, "local",
		"--config", m.StorePath,
		"--state-dir", m.StateDir,
		"--listen", m.ControllerAddr,
		"--admin-addr", m.ControllerAdminAddr)
	if err := WaitReady(p, m.ControllerAdminAddr, ReadyTimeout); err != nil {
		m.T.Fatalf("%v\n%s", err, p.LogTail(30))
	}
	if _, err := os.Stat(m.AnchorPath()); err != nil {
		m.T.Fatalf("controller ready but no trust anchor: %v", err)
	}
	m.mu.Lock()
	m.controller = p
	m.mu.Unlock()
	return p
}

// Controller is the running controller process.
func (m *Mesh) Controller() *Process {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.controller
}

// ProxySpec says how to start a proxy for a workload of the store.
type ProxySpec struct {
	Workload string // name in the store
	AppAddr  string // --app-addr
	// Token, when set, is written to the token file instead of the store's.
	Token string
	// InboundAddr, when set, replaces the store's proxyAddr as the inbound
	// listener (to put a proxy where the store says another one is).
	InboundAddr string
	// TrustAnchors, when set, is the --trust-anchors file instead of the
	// controller's anchor.crt (which the anchor rotation replaces: a file
	// fixed at start stands for a pod's bootstrap anchors).
	TrustAnchors string
	// TrustAnchorsCache, when set, is passed as --trust-anchors-cache.
	TrustAnchorsCache string
	// Name names the process and its log (default the workload): a second
	// proxy of one workload needs its own.
	Name string
	// Args are appended to the command line.
	Args []string
}

// Proxy is a running trellis-proxy.
type Proxy struct {
	Name              string
	Identity          string
	OutboundAddr      string
	InboundAddr       string
	AdminAddr         string
	TapAddr           string // --tap-addr
	TokenFile         string
	TrustAnchors      string // --trust-anchors
	TrustAnchorsCache string // --trust-anchors-cache, "" if none
	Process           *Process
}

// StartProxy starts a proxy for a workload of the store; it does not wait
// for readiness (see WaitReady).
func (m *Mesh) StartProxy(spec ProxySpec) *Proxy {
	m.T.Helper()
	m.mu.Lock()
	w := m.store.Workload(spec.Workload)
	m.mu.Unlock()
	if w == nil {
		m.T.Fatalf("no workload %q in the store", spec.Workload)
	}
	token := w.Token
	if spec.Token != "" {
		token = spec.Token
	}
	px := &Proxy{
		Name:              cmp.Or(spec.Name, spec.Workload),
		Identity:          fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", m.TrustDomain(), w.Namespace, w.ServiceAccount),
		OutboundAddr:      m.Ports.Addr(m.T),
		InboundAddr:       cmp.Or(spec.InboundAddr, w.ProxyAddr),
		AdminAddr:         m.Ports.Addr(m.T),
		TapAddr:           m.Ports.Addr(m.T),
		TokenFile:         filepath.Join(m.Dir, cmp.Or(spec.Name, spec.Workload)+".token"),
		TrustAnchors:      cmp.Or(spec.TrustAnchors, m.AnchorPath()),
		TrustAnchorsCache: spec.TrustAnchorsCache,
	}
	if err := os.WriteFile(px.TokenFile, []byte(token+"\n"), 0o600); err != nil {
		m.T.Fatal(err)
	}
	appAddr := spec.AppAddr
	if appAddr == "" {
		appAddr = m.Ports.Addr(m.T) // nothing listens there
	}
	args := []string{
		"--outbound-addr", px.OutboundAddr,
		"--inbound-addr", px.InboundAddr,
		"--admin-addr", px.AdminAddr,
		"--tap-addr", px.TapAddr,
		"--mode", "explicit",
		"--app-addr", appAddr,
		"--controller-addr", m.ControllerAddr,
		"--trust-anchors", px.TrustAnchors,
		"--identity", px.Identity,
		"--token-file", px.TokenFile,
		"--workload", spec.Workload,
		"--shutdown-grace", "5s",
	}
	if px.TrustAnchorsCache != "" {
		args = append(args, "--trust-anchors-cache", px.TrustAnchorsCache)
	}
	if lvl := os.Getenv("TRELLIS_E2E_LOG_LEVEL"); lvl != "" {
		// For debugging a failure: the proxies' logs are printed with it.
		args = append(args, "--log-level", lvl)
	}
	args = append(args, spec.Args...)
	px.Process = StartProcess(m.T, "proxy-"+px.Name, m.LogDir, m.Bins.Proxy, args...)
	return px
}

// StartReadyProxy is StartProxy followed by WaitReady.
func (m *Mesh) StartReadyProxy(spec ProxySpec) *Proxy {
	m.T.Helper()
	px := m.StartProxy(spec)
	if err := px.WaitReady(ReadyTimeout); err != nil {
		m.T.Fatalf("%v\n%s", err, px.Process.LogTail(30))
	}
	return px
}

// WaitReady waits for the proxy's /ready to answer 200.
func (px *Proxy) WaitReady(timeout time.Duration) error {
	return WaitReady(px.Process, px.AdminAddr, timeout)
}

// Metrics scrapes the proxy's /metrics.
func (px *Proxy) Metrics(ctx context.Context) (Metrics, error) {
	return Scrape(ctx, px.AdminAddr)
}
