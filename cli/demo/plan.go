// Package demo runs `trellis demo`: a whole mesh on this machine (a local
// controller, one proxy per workload, the demo application and a load
// generator, all on loopback) with live golden-signal tables.
package demo

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"

	"github.com/trellis-mesh/trellis/internal/meshconfig"
	"github.com/trellis-mesh/trellis/viz/localtap"
)

// Namespace and trust domain of every demo workload.
const (
	Namespace   = "demo"
	TrustDomain = "cluster.local"
)

// Service is one service of the demo application.
type Service struct {
	Name     string
	Port     int
	Protocol string // http | grpc
}

// Authority is how clients name the service, e.g. books.demo:80.
func (s Service) Authority() string { return fmt.Sprintf("%s.%s:%d", s.Name, Namespace, s.Port) }

// Services of the demo: loadgen -> web -(HTTP/1.1)-> books -(gRPC)-> authors.
var demoServices = []Service{
	{Name: "web", Port: 80, Protocol: "http"},
	{Name: "books", Port: 80, Protocol: "http"},
	{Name: "authors", Port: 80, Protocol: "grpc"},
}

// Services returns the demo's services (a copy).
func Services() []Service { return append([]Service(nil), demoServices...) }

// Workload is one demo process behind its own proxy.
type Workload struct {
	Name           string
	Role           string // web | books | authors | loadgen
	Service        string // "" for the load generator, which serves nothing
	ServiceAccount string
	Version        string

	AppPort      int
	InboundPort  int
	OutboundPort int
	AdminPort    int
	// TapPort is the proxy's --tap-addr (recorded as the store's tapAddr).
	TapPort int

	Token    string
	FailRate float64
	// Target is the service a load generator calls ("": web).
	Target string
}

// Identity is the workload's SPIFFE ID.
func (w Workload) Identity() string {
	return fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", TrustDomain, Namespace, w.ServiceAccount)
}

var demoWorkloads = []Workload{
	{Name: "loadgen", Role: "loadgen", ServiceAccount: "loadgen", Version: "v1"},
	{Name: "web", Role: "web", Service: "web", ServiceAccount: "web", Version: "v1"},
	{Name: "books-v1", Role: "books", Service: "books", ServiceAccount: "books", Version: "v1"},
	{Name: "books-v2", Role: "books", Service: "books", ServiceAccount: "books", Version: "v2"},
	{Name: "authors", Role: "authors", Service: "authors", ServiceAccount: "authors", Version: "v1"},
}

// PortsNeeded is how many loopback ports a plan uses: three for the
// controller (gRPC, admin, the local tap API), five per workload.
func PortsNeeded() int { return 3 + portsPerWorkload*len(demoWorkloads) }

// portsPerWorkload: app, inbound, outbound, admin, tap.
const portsPerWorkload = 5

// setPorts gives w its ports from ports (portsPerWorkload of them).
func (w *Workload) setPorts(ports []int) {
	w.AppPort, w.InboundPort, w.OutboundPort, w.AdminPort, w.TapPort = ports[0], ports[1], ports[2], ports[3], ports[4]
}

// Plan is everything the demo needs to start its processes.
type Plan struct {
	Dir                 string
	ControllerPort      int
	ControllerAdminPort int
	// ControllerTapPort serves the local tap API to holders of TapToken
	// (`trellis tap --local`, the dashboard).
	ControllerTapPort int
	TapToken          string
	Workloads         []Workload
	// Policy is the demo's authorization policy ("": none; PolicyDeny).
	Policy string
	// Split is the canary split of --split (nil: none).
	Split *Split
}

// Paths inside the work directory.
func (p Plan) ConfigPath() string          { return filepath.Join(p.Dir, "mesh.yaml") }
func (p Plan) StateDir() string            { return filepath.Join(p.Dir, "state") }
func (p Plan) AnchorPath() string          { return filepath.Join(p.StateDir(), "anchor.crt") }
func (p Plan) LogPath(name string) string  { return filepath.Join(p.Dir, "logs", name+".log") }
func (p Plan) TokenPath(w Workload) string { return filepath.Join(p.Dir, "tokens", w.Name+".token") }

// TapTokenPath holds the local tap API's token.
func (p Plan) TapTokenPath() string { return filepath.Join(p.Dir, "tokens", "tap-api.token") }

// NewPlan lays out the demo on the given ports (PortsNeeded of them) with
// fresh tokens, applying the fail rates keyed by service name.
func NewPlan(dir string, ports []int, fail map[string]float64) (Plan, error) {
	if len(ports) < PortsNeeded() {
		return Plan{}, fmt.Errorf("plan needs %d ports, got %d", PortsNeeded(), len(ports))
	}
	for svc := range fail {
		if !knownService(svc) {
			return Plan{}, fmt.Errorf("--fail: unknown service %q (the demo has web, books, authors)", svc)
		}
	}
	tapToken, err := newToken()
	if err != nil {
		return Plan{}, err
	}
	p := Plan{Dir: dir, ControllerPort: ports[0], ControllerAdminPort: ports[1], ControllerTapPort: ports[2], TapToken: tapToken}
	next := ports[3:]
	for _, w := range demoWorkloads {
		w.setPorts(next)
		next = next[portsPerWorkload:]
		tok, err := newToken()
		if err != nil {
			return Plan{}, err
		}
		w.Token = tok
		w.FailRate = fail[w.Service]
		p.Workloads = append(p.Workloads, w)
	}
	return p, nil
}

func knownService(name string) bool {
	for _, s := range demoServices {
		if s.Name == name {
			return true
		}
	}
	return false
}

// newToken is 16 random bytes in hex: 32 characters, more than the 16 the
// controller requires.
func newToken() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("token: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

func addr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// Store is the local store file (docs/local-mode.md) the demo writes,
// with the demo's own pre-flight checks (Validate).
type Store meshconfig.File

// Store builds the local store for the plan.
func (p Plan) Store() Store {
	s := Store{TrustDomain: TrustDomain}
	for _, svc := range demoServices {
		s.Services = append(s.Services, meshconfig.Service{
			Name: svc.Name, Namespace: Namespace,
			Ports: []meshconfig.ServicePort{{Port: svc.Port, Protocol: svc.Protocol}},
		})
	}
	for _, w := range p.Workloads {
		sw := meshconfig.Workload{
			Name: w.Name, Namespace: Namespace, ServiceAccount: w.ServiceAccount,
			Token: w.Token, ProxyAddr: addr(w.InboundPort),
			Labels:    map[string]string{"app": w.Role, "version": w.Version},
			AdminAddr: addr(w.AdminPort),
			TapAddr:   addr(w.TapPort),
			Endpoints: []meshconfig.Endpoint{},
		}
		if w.Service != "" {
			svc := serviceByName(w.Service)
			// Equal weights: books-v1 and books-v2 share the traffic.
			sw.Endpoints = append(sw.Endpoints, meshconfig.Endpoint{Service: svc.Name, Port: svc.Port, TargetPort: w.AppPort, Weight: new(1)})
		}
		s.Workloads = append(s.Workloads, sw)
	}
	s.Policies = p.Policies()
	if p.Split != nil {
		p.addSplit(&s)
	}
	return s
}

func serviceByName(name string) Service {
	for _, s := range demoServices {
		if s.Name == name {
			return s
		}
	}
	panic("demo: unknown service " + name) // the tables above are static
}

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// Validate applies the rules of docs/local-mode.md, so the demo refuses to
// start a controller with a file it would refuse.
func (s Store) Validate() error {
	var errs []error
	services := map[string]map[int]bool{}
	for i, svc := range s.Services {
		if !dnsLabel.MatchString(svc.Name) || !dnsLabel.MatchString(svc.Namespace) {
			errs = append(errs, fmt.Errorf("services[%d]: name and namespace must be DNS labels", i))
		}
		key := svc.Namespace + "/" + svc.Name
		if services[key] != nil {
			errs = append(errs, fmt.Errorf("services[%d]: duplicate %s", i, key))
		}
		services[key] = map[int]bool{}
		for _, pt := range svc.Ports {
			if pt.Port < 1 || pt.Port > 65535 {
				errs = append(errs, fmt.Errorf("services[%d].ports: port %d out of range", i, pt.Port))
			}
			services[key][pt.Port] = true
		}
	}
	names, tokens := map[string]bool{}, map[string]bool{}
	for i, w := range s.Workloads {
		if !dnsLabel.MatchString(w.Name) || !dnsLabel.MatchString(w.Namespace) || !dnsLabel.MatchString(w.ServiceAccount) {
			errs = append(errs, fmt.Errorf("workloads[%d]: name, namespace and serviceAccount must be DNS labels", i))
		}
		if names[w.Namespace+"/"+w.Name] {
			errs = append(errs, fmt.Errorf("workloads[%d]: duplicate %s/%s", i, w.Namespace, w.Name))
		}
		names[w.Namespace+"/"+w.Name] = true
		if len(w.Token) < 16 || tokens[w.Token] {
			errs = append(errs, fmt.Errorf("workloads[%d].token: need a unique token of at least 16 characters", i))
		}
		tokens[w.Token] = true
		if _, err := netip.ParseAddrPort(w.ProxyAddr); err != nil {
			errs = append(errs, fmt.Errorf("workloads[%d].proxyAddr: %w", i, err))
		}
		for j, ep := range w.Endpoints {
			if !services[w.Namespace+"/"+ep.Service][ep.Port] {
				errs = append(errs, fmt.Errorf("workloads[%d].endpoints[%d]: no service %s port %d", i, j, ep.Service, ep.Port))
			}
			if ep.TargetPort < 1 || ep.TargetPort > 65535 {
				errs = append(errs, fmt.Errorf("workloads[%d].endpoints[%d].targetPort: %d out of range", i, j, ep.TargetPort))
			}
		}
	}
	return errors.Join(errs...)
}

// Write creates the work directory's files: the store (0600: it holds the
// tokens), one 0600 token file per workload, the 0700 state directory and
// the log directory.
func (p Plan) Write() error {
	for _, d := range []string{p.StateDir(), filepath.Dir(p.LogPath("x")), filepath.Dir(p.TokenPath(Workload{Name: "x"}))} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("work dir: %w", err)
		}
	}
	store := p.Store()
	if err := store.Validate(); err != nil {
		return fmt.Errorf("store file: %w", err)
	}
	b, err := meshconfig.File(store).Marshal()
	if err != nil {
		return fmt.Errorf("store file: %w", err)
	}
	if err := os.WriteFile(p.ConfigPath(), b, 0o600); err != nil {
		return fmt.Errorf("store file: %w", err)
	}
	for _, w := range p.Workloads {
		if err := os.WriteFile(p.TokenPath(w), []byte(w.Token), 0o600); err != nil {
			return fmt.Errorf("token file: %w", err)
		}
	}
	if err := os.WriteFile(p.TapTokenPath(), []byte(p.TapToken), 0o600); err != nil {
		return fmt.Errorf("tap token file: %w", err)
	}
	return localtap.WriteInfo(p.Dir, localtap.Info{Addr: addr(p.ControllerTapPort), TokenFile: p.TapTokenPath()})
}

// AllocatePorts returns n distinct free loopback ports. With base 0 the
// kernel picks them (listen on :0, then close). With a base, it checks that
// base..base+n-1 are free and fails naming the first one in use.
func AllocatePorts(n, base int) ([]int, error) {
	if base != 0 {
		if base < 1 || base+n-1 > 65535 {
			return nil, fmt.Errorf("--base-port %d: need %d ports within 1-65535", base, n)
		}
		ports := make([]int, n)
		for i := range ports {
			ports[i] = base + i
			if err := portFree(ports[i]); err != nil {
				return nil, err
			}
		}
		return ports, nil
	}
	// Hold every listener until all are chosen so the ports are distinct.
	lns := make([]net.Listener, 0, n)
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("allocate a loopback port: %w", err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func portFree(port int) error {
	ln, err := net.Listen("tcp", addr(port))
	if err != nil {
		return fmt.Errorf("port %s is in use (choose another --base-port, or omit it to use free ports): %w", addr(port), err)
	}
	return ln.Close()
}
