// Package tapfan taps proxies for the controller, in either mode: each
// proxy's Tap.Observe over mesh mTLS with the controller's own identity,
// every proxy verified as exactly the identity it must have, their events
// fanned in to one consumer with pod and namespace filled in. The
// Kubernetes aggregated API (controller/k8s/tapapi) and the local
// controller's loopback endpoint (controller/local) serve it.
package tapfan

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/encoding/protojson"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/pki"
	"github.com/trellis-mesh/trellis/internal/tapreq"
)

// Target is one proxy to tap.
type Target struct {
	// Namespace and Name of its pod (local mode: workload), set on events.
	Namespace, Name string
	// Addr is the proxy's tap address.
	Addr string
	// Identity the proxy must prove.
	Identity identity.ID
}

// Dialer reaches proxies' tap ports over mesh mTLS with the controller's
// own identity. The key stays in the controller: ClientCertificate hands
// out the certificate the controller serves proxies with.
type Dialer struct {
	// ClientCertificate is the controller's current certificate.
	ClientCertificate func() (*tls.Certificate, error)
	// Roots are the current trust anchors.
	Roots func() *x509.CertPool
}

// tlsConfig verifies the proxy as exactly want: the pod's identity.
func (d *Dialer) tlsConfig(want identity.ID) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ServerName: want.ServerName(),
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return d.ClientCertificate()
		},
		// Verification is pki.Verify's (exact SPIFFE identity against the
		// current bundle), not the Web PKI's host names.
		InsecureSkipVerify: true, //nolint:gosec // verified below
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			_, err := pki.Verify(raw, d.Roots(), x509.ExtKeyUsageServerAuth, want, time.Now())
			return err
		},
	}
}

// Observe opens one proxy's tap stream; events go to fn until the stream
// ends, ctx ends, or fn fails.
func (d *Dialer) Observe(ctx context.Context, p Target, req *apiv1.ObserveRequest, fn func(*apiv1.TapEvent) error) error {
	conn, err := grpc.NewClient("passthrough:///"+p.Addr, grpc.WithTransportCredentials(credentials.NewTLS(d.tlsConfig(p.Identity))))
	if err != nil {
		return fmt.Errorf("pod %s/%s: %w", p.Namespace, p.Name, err)
	}
	defer conn.Close()
	stream, err := apiv1.NewTapClient(conn).Observe(ctx, req)
	if err != nil {
		return fmt.Errorf("pod %s/%s: tap: %w", p.Namespace, p.Name, err)
	}
	for {
		ev, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("pod %s/%s: tap: %w", p.Namespace, p.Name, err)
		}
		ev.Pod, ev.Namespace = p.Name, p.Namespace
		if err := fn(ev); err != nil {
			return err
		}
	}
}

// ErrLimit ends a fan-in when the tap's limit of requests is reached.
var ErrLimit = errors.New("tap limit reached")

// FanIn taps every pod at once and passes their events to fn one at a
// time, until ctx ends, every stream ends, fn fails, or limit requests
// (counted by their ResponseEnd) have ended (0: no limit). It returns how
// many pods failed; their errors are logged.
func (d *Dialer) FanIn(ctx context.Context, log *slog.Logger, pods []Target, req *apiv1.ObserveRequest, fn func(*apiv1.TapEvent) error) (failed int, err error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		mu    sync.Mutex
		ended uint32
		wg    sync.WaitGroup
	)
	deliver := func(ev *apiv1.TapEvent) error {
		mu.Lock()
		defer mu.Unlock()
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		if err := fn(ev); err != nil {
			cancel(err)
			return err
		}
		if ev.GetResponseEnd() != nil {
			ended++
			if req.GetLimit() > 0 && ended >= req.GetLimit() {
				cancel(ErrLimit)
				return ErrLimit
			}
		}
		return nil
	}
	for _, p := range pods {
		wg.Go(func() {
			if err := d.Observe(ctx, p, req, deliver); err != nil && ctx.Err() == nil {
				log.Warn("tap of a pod failed", "pod", p.Namespace+"/"+p.Name, "addr", p.Addr, "err", err)
				mu.Lock()
				failed++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, ErrLimit) && !errors.Is(cause, context.Canceled) {
		return failed, cause
	}
	return failed, nil
}

// ReadObserveRequest decodes the body (empty: every default) and refuses
// what every proxy would refuse (tapreq.Check: size, sample, direction,
// match lengths) or what the caller may not ask (more body bytes than a
// proxy captures). Both tap APIs answer its errors with 400, where a
// request the proxies refused would have been a 200 without events.
func ReadObserveRequest(body io.Reader) (*apiv1.ObserveRequest, error) {
	data, err := io.ReadAll(io.LimitReader(body, maxRequestBody+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxRequestBody {
		return nil, fmt.Errorf("larger than %d bytes", maxRequestBody)
	}
	req := &apiv1.ObserveRequest{}
	if len(strings.TrimSpace(string(data))) == 0 {
		return req, nil
	}
	if err := protojson.Unmarshal(data, req); err != nil {
		return nil, err
	}
	if req.GetBodyBytes() > MaxBodyBytes {
		return nil, fmt.Errorf("bodyBytes %d: at most %d", req.GetBodyBytes(), MaxBodyBytes)
	}
	if err := tapreq.Check(req); err != nil {
		return nil, err
	}
	return req, nil
}

// Limits of ReadObserveRequest.
const (
	// maxRequestBody bounds an ObserveRequest's JSON body. JSON escapes can
	// make a request several times its encoded size, which tapreq.Check
	// bounds to what a proxy accepts.
	maxRequestBody = 64 << 10
	// MaxBodyBytes is the proxies' cap on captured body bytes.
	MaxBodyBytes = tapreq.MaxBodyBytes
)

// Stream answers an HTTP tap: 200, then each event of the targets as one
// line of protojson, flushed, until the client goes, the limit, or every
// stream ends. It returns how many targets failed.
func (d *Dialer) Stream(ctx context.Context, w http.ResponseWriter, log *slog.Logger, targets []Target, req *apiv1.ObserveRequest) (int, error) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	return d.FanIn(ctx, log, targets, req, func(ev *apiv1.TapEvent) error {
		line, err := protojson.Marshal(ev)
		if err != nil {
			return err
		}
		if _, err := w.Write(append(line, '\n')); err != nil {
			return err
		}
		return rc.Flush()
	})
}
