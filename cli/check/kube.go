package check

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
)

// NewEnv builds an Env for the cluster of cfg: one HTTP client shared by
// the typed and metadata clients, the Date probe and the pod proxy.
func NewEnv(cfg *rest.Config) (*Env, error) {
	cfg = rest.CopyConfig(cfg)
	if cfg.Timeout == 0 {
		// Discovery calls take no context; this bounds them.
		cfg.Timeout = 30 * time.Second
	}
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("http client for %s: %w", cfg.Host, err)
	}
	kube, err := kubernetes.NewForConfigAndClient(cfg, hc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	meta, err := metadata.NewForConfigAndClient(cfg, hc)
	if err != nil {
		return nil, fmt.Errorf("metadata client: %w", err)
	}
	return &Env{
		Kube:    kube,
		Meta:    meta,
		APIDate: HTTPDate(hc, strings.TrimRight(cfg.Host, "/")+"/version"),
		Scrape:  PodProxyScraper(kube.CoreV1().RESTClient()),
	}, nil
}

// HTTPDate returns an APIDate that GETs url with client (which carries the
// kubeconfig's credentials) and reads the Date header. Any status will do:
// even a 401 or 403 carries the server's time.
func HTTPDate(client *http.Client, url string) func(ctx context.Context) (time.Time, error) {
	return func(ctx context.Context) (time.Time, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return time.Time{}, fmt.Errorf("date probe: %w", err)
		}
		resp, err := client.Do(req)
		if err != nil {
			return time.Time{}, fmt.Errorf("date probe: %w", err)
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		_ = resp.Body.Close()
		h := resp.Header.Get("Date")
		if h == "" {
			return time.Time{}, fmt.Errorf("date probe: GET %s answered %s without a Date header", url, resp.Status)
		}
		t, err := http.ParseTime(h)
		if err != nil {
			return time.Time{}, fmt.Errorf("date probe: Date header %q: %w", h, err)
		}
		return t, nil
	}
}

// PodProxyScraper returns a Scrape that GETs
// /api/v1/namespaces/NS/pods/NAME:PORT/proxy/PATH: the API server connects
// to the pod, so no port-forward and no route to pod IPs is needed.
func PodProxyScraper(core rest.Interface) func(ctx context.Context, namespace, pod string, port int, path string) ([]byte, error) {
	return func(ctx context.Context, namespace, pod string, port int, path string) ([]byte, error) {
		rc, err := core.Get().Namespace(namespace).Resource("pods").
			Name(pod + ":" + strconv.Itoa(port)).SubResource("proxy").Suffix(path).Stream(ctx)
		if err != nil {
			return nil, fmt.Errorf("GET pods/%s:%d/proxy/%s: %w", pod, port, path, err)
		}
		defer func() { _ = rc.Close() }()
		body, err := io.ReadAll(io.LimitReader(rc, MaxMetricsBody+1))
		if err != nil {
			return nil, fmt.Errorf("read pods/%s:%d/proxy/%s: %w", pod, port, path, err)
		}
		if len(body) > MaxMetricsBody {
			return nil, fmt.Errorf("pods/%s:%d/proxy/%s: body larger than %d bytes", pod, port, path, MaxMetricsBody)
		}
		return body, nil
	}
}
