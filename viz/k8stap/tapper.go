// Package k8stap is the Kubernetes model.Tapper: a client of the
// tap.trellis.io aggregated API with the user's own credentials (the
// kubeconfig's, impersonation included), so a tap shows exactly what the
// user's RBAC allows.
package k8stap

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"k8s.io/client-go/rest"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/viz/model"
)

// API path prefix of taps (api/v1/tap.proto).
const prefix = "/apis/tap.trellis.io/v1alpha1/watch/namespaces/"

// Resources that can be tapped, beside a whole namespace.
var Resources = []string{"pods", "deployments", "statefulsets", "daemonsets", "replicasets", "jobs"}

// maxLine bounds one event line (bodies are at most 64 KiB each, base64).
const maxLine = 1 << 20

// Tapper taps through the API server of Config.
type Tapper struct {
	Config *rest.Config
}

// Path is the API path of a tap of target.
func Path(target model.Resource) (string, error) {
	if target.Namespace == "" {
		return "", errors.New("a tap needs a namespace")
	}
	ns := url.PathEscape(target.Namespace)
	if target.Kind == "namespaces" {
		return prefix + ns + "/tap", nil
	}
	for _, r := range Resources {
		if r == target.Kind {
			if target.Name == "" {
				return "", fmt.Errorf("%s: a name is needed", target.Kind)
			}
			return prefix + ns + "/" + r + "/" + url.PathEscape(target.Name) + "/tap", nil
		}
	}
	return "", fmt.Errorf("%q cannot be tapped: want namespaces or one of %s", target.Kind, strings.Join(Resources, ", "))
}

// Tap implements model.Tapper.
func (t *Tapper) Tap(ctx context.Context, req model.TapRequest, fn func(*apiv1.TapEvent) error) error {
	path, err := Path(req.Target)
	if err != nil {
		return err
	}
	body, err := protojson.Marshal(req.Observe)
	if err != nil {
		return err
	}
	hc, err := rest.HTTPClientFor(t.Config)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	host := strings.TrimSuffix(t.Config.Host, "/")
	if !strings.Contains(host, "://") {
		host = "https://" + host
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, host+t.Config.APIPath+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Accept", "application/json")
	resp, err := hc.Do(hreq)
	if err != nil {
		return fmt.Errorf("tap %s: %w", path, err)
	}
	return ReadStream(resp, fn)
}

// ReadStream reads a tap answer: the events of a 200, else the refusal's
// Status as an *Error. It closes the body.
func ReadStream(resp *http.Response, fn func(*apiv1.TapEvent) error) error {
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return statusError(resp)
	}
	return readEvents(resp.Body, fn)
}

// readEvents decodes newline-delimited protojson events.
func readEvents(r io.Reader, fn func(*apiv1.TapEvent) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		ev := &apiv1.TapEvent{}
		if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(line, ev); err != nil {
			return fmt.Errorf("tap event: %w", err)
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("tap stream: %w", err)
	}
	return nil
}

// Error is a refused tap: the API server's (or the controller's) status.
type Error struct {
	Code    int
	Reason  string
	Message string
}

func (e *Error) Error() string { return e.Message }

// statusError reads a metav1.Status answer into an Error.
func statusError(resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var st struct {
		Message string `json:"message"`
		Reason  string `json:"reason"`
	}
	e := &Error{Code: resp.StatusCode}
	if json.Unmarshal(data, &st) == nil && st.Message != "" {
		e.Message, e.Reason = st.Message, st.Reason
	} else {
		e.Message = fmt.Sprintf("%s: %s", resp.Status, strings.TrimSpace(string(data)))
	}
	switch resp.StatusCode {
	case http.StatusNotFound:
		if e.Reason == "" || strings.Contains(e.Message, "the server could not find the requested resource") {
			e.Message += " (is the tap API installed and available? trellis check: tap-api)"
		}
	case http.StatusServiceUnavailable:
		e.Message += " (the tap API is not available: trellis check)"
	}
	return e
}
