// Package localrun runs `trellis run`: a controller in local mode, one
// server proxy in front of each of the user's own apps and one client
// proxy that the user's tools talk to, all on loopback. It is the
// walkthrough of docs/local-mode.md as one command.
package localrun

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/trellis-mesh/trellis/internal/meshconfig"
)

// ServicePort is the port every service gets: clients name it NAME.NS:80
// (or NAME.NS, port 80 being the default).
const ServicePort = 80

// ClientWorkload is the workload of the client proxy.
const ClientWorkload = "client"

// Service is one of the user's apps: the service NAME.<namespace>:80 is
// the app at Addr behind its own server proxy.
type Service struct {
	Name string
	Addr string // host:port of the app
}

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// ParseServices parses --service values NAME=HOST:PORT.
func ParseServices(specs []string) ([]Service, error) {
	if len(specs) == 0 {
		return nil, errors.New("at least one --service NAME=HOST:PORT is required")
	}
	seen := map[string]bool{}
	out := make([]Service, 0, len(specs))
	for _, spec := range specs {
		name, addr, ok := strings.Cut(spec, "=")
		if !ok {
			return nil, fmt.Errorf("--service %q: want NAME=HOST:PORT", spec)
		}
		if !dnsLabel.MatchString(name) || name == ClientWorkload {
			return nil, fmt.Errorf("--service %q: the name must be a DNS label (lower-case letters, digits, inner '-') other than %q", spec, ClientWorkload)
		}
		if seen[name] {
			return nil, fmt.Errorf("--service %q: %s named twice", spec, name)
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil || host == "" {
			return nil, fmt.Errorf("--service %q: the app address must be HOST:PORT", spec)
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return nil, fmt.Errorf("--service %q: port %q is not 1-65535", spec, port)
		}
		seen[name] = true
		out = append(out, Service{Name: name, Addr: addr})
	}
	return out, nil
}

// Proxy is one trellis-proxy of the plan.
type Proxy struct {
	Workload string
	Service  *Service // nil for the client proxy
	Outbound string
	Inbound  string
	Admin    string
	Tap      string // --tap-addr, recorded as the store's tapAddr
	Token    string
}

// Plan is every address, token and file of one run.
type Plan struct {
	Dir          string
	Namespace    string
	Controller   string
	ControllerAd string
	Client       Proxy
	Servers      []Proxy
}

// NewPlan lays out a run in dir: ports[0:2] for the controller, then
// four per proxy (outbound, inbound, admin, tap), the client proxy first.
func NewPlan(dir, namespace string, services []Service, ports []int) (Plan, error) {
	if len(ports) < PortsNeeded(len(services)) {
		return Plan{}, fmt.Errorf("need %d ports, got %d", PortsNeeded(len(services)), len(ports))
	}
	addr := func(i int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[i])) }
	p := Plan{Dir: dir, Namespace: namespace, Controller: addr(0), ControllerAd: addr(1)}
	next := 2
	newProxy := func(workload string, svc *Service) (Proxy, error) {
		tok, err := newToken()
		px := Proxy{Workload: workload, Service: svc, Outbound: addr(next), Inbound: addr(next + 1), Admin: addr(next + 2), Tap: addr(next + 3), Token: tok}
		next += 4
		return px, err
	}
	var err error
	if p.Client, err = newProxy(ClientWorkload, nil); err != nil {
		return Plan{}, err
	}
	for i := range services {
		px, err := newProxy(services[i].Name, &services[i])
		if err != nil {
			return Plan{}, err
		}
		p.Servers = append(p.Servers, px)
	}
	return p, nil
}

// PortsNeeded is how many loopback ports a run with n services uses.
func PortsNeeded(n int) int { return 2 + 4*(n+1) }

// Paths of the run's files.
func (p Plan) ConfigPath() string         { return filepath.Join(p.Dir, "mesh.yaml") }
func (p Plan) StateDir() string           { return filepath.Join(p.Dir, "state") }
func (p Plan) AnchorPath() string         { return filepath.Join(p.StateDir(), "anchor.crt") }
func (p Plan) LogPath(name string) string { return filepath.Join(p.Dir, "logs", name+".log") }
func (p Plan) TokenPath(px Proxy) string  { return filepath.Join(p.Dir, "tokens", px.Workload+".token") }
func (p Plan) Identity(workload string) string {
	return fmt.Sprintf("spiffe://cluster.local/ns/%s/sa/%s", p.Namespace, workload)
}

// Authority is how clients name a service.
func (p Plan) Authority(s Service) string { return fmt.Sprintf("%s.%s", s.Name, p.Namespace) }

// Store is the local store file of the plan: one service per app, backed
// by its workload (no targetPort: the server proxy's --app-addr), and the
// client workload without endpoints.
func (p Plan) Store() meshconfig.File {
	f := meshconfig.File{}
	for _, px := range append([]Proxy{p.Client}, p.Servers...) {
		w := meshconfig.Workload{
			Name: px.Workload, Namespace: p.Namespace, ServiceAccount: px.Workload,
			Token: px.Token, ProxyAddr: px.Inbound, AdminAddr: px.Admin, TapAddr: px.Tap,
		}
		if px.Service != nil {
			f.Services = append(f.Services, meshconfig.Service{
				Name: px.Service.Name, Namespace: p.Namespace,
				Ports: []meshconfig.ServicePort{{Port: ServicePort}},
			})
			w.Endpoints = []meshconfig.Endpoint{{Service: px.Service.Name, Port: ServicePort}}
		}
		f.Workloads = append(f.Workloads, w)
	}
	return f
}

// Write creates the directories, the token files (0600) and the store.
func (p Plan) Write() error {
	for _, d := range []string{filepath.Join(p.Dir, "logs"), filepath.Join(p.Dir, "tokens")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	for _, px := range append([]Proxy{p.Client}, p.Servers...) {
		if err := os.WriteFile(p.TokenPath(px), []byte(px.Token+"\n"), 0o600); err != nil {
			return fmt.Errorf("token file: %w", err)
		}
	}
	data, err := p.Store().Marshal()
	if err != nil {
		return err
	}
	return os.WriteFile(p.ConfigPath(), data, 0o600)
}

func newToken() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("token: %w", err)
	}
	return hex.EncodeToString(b), nil
}
