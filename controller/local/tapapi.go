package local

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/trellis-mesh/trellis/controller/ca"
	"github.com/trellis-mesh/trellis/controller/store"
	"github.com/trellis-mesh/trellis/controller/tapfan"
)

// The local tap API: the same stream as Kubernetes' tap.trellis.io, on a
// loopback address, for `trellis tap --local` and the demo's dashboard.
// There is no API server to authenticate callers, so a bearer token from
// a file (0600, written by whoever starts the controller) stands in; the
// proxies' tap ports still admit the controller's identity only, whose key
// stays in this process.
const tapPrefix = "/apis/tap.trellis.io/v1alpha1/watch/"

// maxLocalTaps bounds concurrent taps.
const maxLocalTaps = 16

type localTap struct {
	store  *store.Store
	dialer *tapfan.Dialer
	token  []byte
	log    *slog.Logger
	slots  chan struct{}
}

// startTapAPI serves the local tap API on addr (loopback only) until ctx
// ends; it returns the bound address.
func startTapAPI(ctx context.Context, addr, tokenFile string, st *store.Store, authority *ca.CA, serving *ca.ServingCert, log *slog.Logger) (string, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().IsLoopback() {
		return "", fmt.Errorf("--tap-api-addr %q: want a loopback ip:port (the local tap API has no other protection than its token)", addr)
	}
	token, err := readTapToken(tokenFile)
	if err != nil {
		return "", err
	}
	lt := &localTap{
		store: st, token: token, log: log, slots: make(chan struct{}, maxLocalTaps),
		dialer: &tapfan.Dialer{
			ClientCertificate: func() (*tls.Certificate, error) { return serving.GetCertificate(nil) },
			Roots:             func() *x509.CertPool { return authority.State().Pool },
		},
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return "", fmt.Errorf("tap API listener: %w", err)
	}
	hs := &http.Server{Handler: lt, ReadHeaderTimeout: 5 * time.Second, BaseContext: func(net.Listener) context.Context { return ctx }}
	go func() {
		<-ctx.Done()
		_ = hs.Close() // taps are endless streams
	}()
	go func() {
		if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Error("tap API server stopped", "err", err)
		}
	}()
	return ln.Addr().String(), nil
}

// readTapToken reads the token of --tap-token-file. The token is the
// API's only protection, so a file other users can read (or write) is
// refused rather than served with.
func readTapToken(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--tap-token-file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("--tap-token-file: %w", err)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("--tap-token-file %s: mode %04o lets other users read or change the token; make it private: chmod 600 %s", path, perm, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxTokenFile+1))
	if err != nil {
		return nil, fmt.Errorf("--tap-token-file %s: %w", path, err)
	}
	if len(b) > maxTokenFile {
		return nil, fmt.Errorf("--tap-token-file %s: larger than %d bytes, not a token", path, maxTokenFile)
	}
	token := []byte(strings.TrimSpace(string(b)))
	if len(token) < 16 {
		return nil, fmt.Errorf("--tap-token-file %s: the token is shorter than 16 characters", path)
	}
	return token, nil
}

// maxTokenFile bounds what readTapToken reads.
const maxTokenFile = 4096

func (lt *localTap) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(got), lt.token) != 1 {
		localStatus(w, http.StatusUnauthorized, "unauthenticated: the local tap API needs the token of --tap-token-file")
		return
	}
	ns, name, ok := parseLocalPath(r.URL.Path)
	if !ok {
		localStatus(w, http.StatusNotFound, "no such path: "+r.URL.Path+" (taps are POST "+tapPrefix+"[namespaces/NS/][workloads/NAME/]tap)")
		return
	}
	if r.Method != http.MethodPost {
		localStatus(w, http.StatusMethodNotAllowed, "a tap is a POST with an ObserveRequest body")
		return
	}
	req, err := tapfan.ReadObserveRequest(r.Body)
	if err != nil {
		localStatus(w, http.StatusBadRequest, "the ObserveRequest body: "+err.Error())
		return
	}
	targets := lt.targets(ns, name)
	if len(targets) == 0 {
		localStatus(w, http.StatusNotFound, fmt.Sprintf("no workload with a tapAddr matches namespace %q, workload %q in %s", ns, name, lt.store.Path()))
		return
	}
	select {
	case lt.slots <- struct{}{}:
		defer func() { <-lt.slots }()
	default:
		localStatus(w, http.StatusTooManyRequests, fmt.Sprintf("too many open taps (at most %d): close one first", maxLocalTaps))
		return
	}
	failed, err := lt.dialer.Stream(r.Context(), w, lt.log, targets, req)
	lt.log.Info("tap ended", "namespace", ns, "workload", name, "failed", failed, "err", err)
}

// targets are the workloads of the store that record a tap address,
// filtered by namespace and name ("" matches any).
func (lt *localTap) targets(ns, name string) []tapfan.Target {
	cfg, _ := lt.store.Current()
	var out []tapfan.Target
	for _, w := range cfg.Workloads {
		if !w.TapAddr.IsValid() || (ns != "" && w.Namespace != ns) || (name != "" && w.Name != name) {
			continue
		}
		out = append(out, tapfan.Target{Namespace: w.Namespace, Name: w.Name, Addr: w.TapAddr.String(), Identity: w.Identity})
	}
	return out
}

// parseLocalPath reads [namespaces/NS/][workloads/NAME/]tap after the prefix.
func parseLocalPath(p string) (ns, name string, ok bool) {
	rest, ok := strings.CutPrefix(p, tapPrefix)
	if !ok {
		return "", "", false
	}
	parts := strings.Split(rest, "/")
	if len(parts) >= 3 && parts[0] == "namespaces" {
		ns, parts = parts[1], parts[2:]
		if ns == "" {
			return "", "", false
		}
	}
	if len(parts) == 3 && parts[0] == "workloads" && parts[1] != "" {
		name, parts = parts[1], parts[2:]
	}
	return ns, name, len(parts) == 1 && parts[0] == "tap"
}

// localStatus answers an error in the shape of a Kubernetes Status, as
// the aggregated API does, so one client reads both.
func localStatus(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"kind": "Status", "apiVersion": "v1", "status": "Failure",
		"reason": strings.ReplaceAll(http.StatusText(code), " ", ""), "message": msg, "code": code})
}
