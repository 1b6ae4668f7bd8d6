package tapapi

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/pki"
)

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
func (d *Dialer) Observe(ctx context.Context, p PodTap, req *apiv1.ObserveRequest, fn func(*apiv1.TapEvent) error) error {
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

// errLimit ends a fan-in when the tap's limit of requests is reached.
var errLimit = errors.New("tap limit reached")

// FanIn taps every pod at once and passes their events to fn one at a
// time, until ctx ends, every stream ends, fn fails, or limit requests
// (counted by their ResponseEnd) have ended (0: no limit). It returns how
// many pods failed; their errors are logged.
func (d *Dialer) FanIn(ctx context.Context, log *slog.Logger, pods []PodTap, req *apiv1.ObserveRequest, fn func(*apiv1.TapEvent) error) (failed int, err error) {
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
				cancel(errLimit)
				return errLimit
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
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, errLimit) && !errors.Is(cause, context.Canceled) {
		return failed, cause
	}
	return failed, nil
}
