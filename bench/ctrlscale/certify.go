package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/pki"
)

// storm is what n proxies starting at once saw from Identity.Certify.
type storm struct {
	n            int
	failed       int
	wall         time.Duration // first call to last certificate
	lat          []time.Duration
	tokenReviews float64 // TokenReview creations the API server served meanwhile
	firstErr     error
}

// certifyStorm gives each of n proxies its own ServiceAccount token (from
// the TokenRequest API, before the clock starts), then has all of them
// dial the controller and call Certify at once, as a fleet restarting.
func certifyStorm(ctx context.Context, c kubernetes.Interface, ctl *controller, n, services, workers int) (storm, error) {
	tokens := make([]string, n)
	err := parallel(ctx, n, workers, func(ctx context.Context, i int) error {
		tr, err := c.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, proxyID(i, services).ServiceAccount, &authnv1.TokenRequest{
			Spec: authnv1.TokenRequestSpec{Audiences: []string{"identity.trellis.io"}, ExpirationSeconds: new(int64(3600))},
		}, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("token request: %w", err)
		}
		tokens[i] = tr.Status.Token
		return nil
	})
	if err != nil {
		return storm{}, err
	}
	reviews0, err := tokenReviews(ctx, c)
	if err != nil {
		return storm{}, err
	}
	s := storm{n: n, lat: make([]time.Duration, 0, n)}
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for i, tok := range tokens {
		wg.Go(func() {
			d, err := certifyOnce(ctx, ctl, proxyID(i, services), tok)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				s.failed++
				if s.firstErr == nil {
					s.firstErr = err
				}
				return
			}
			s.lat = append(s.lat, d)
		})
	}
	wg.Wait()
	s.wall = time.Since(start)
	reviews1, err := tokenReviews(ctx, c)
	if err != nil {
		return storm{}, err
	}
	s.tokenReviews = reviews1 - reviews0
	return s, nil
}

// certifyOnce is one proxy's start: a new connection (no client
// certificate yet), a key, a CSR, Certify, and the chain verified.
func certifyOnce(ctx context.Context, ctl *controller, id identity.ID, token string) (time.Duration, error) {
	start := time.Now()
	anchors := ctl.anchors
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // replaced by the SPIFFE verification below
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			_, err := pki.Verify(raw, anchors, x509.ExtKeyUsageServerAuth, identity.Controller(trustDomain), time.Now())
			return err
		},
	}
	conn, err := grpc.NewClient(ctl.grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	key, err := pki.GenerateKey()
	if err != nil {
		return 0, err
	}
	csr, err := pki.NewCSR(key, id)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	resp, err := apiv1.NewIdentityClient(conn).Certify(ctx, &apiv1.CertifyRequest{Identity: id.String(), Token: []byte(token), CertificateSigningRequest: csr})
	if err != nil {
		return 0, fmt.Errorf("certify: %w", err)
	}
	if _, err := pki.Verify(resp.Chain, anchors, x509.ExtKeyUsageClientAuth, id, time.Now()); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// tokenReviews reads the API server's count of TokenReview creations from
// its /metrics (the admin client may read it).
func tokenReviews(ctx context.Context, c kubernetes.Interface) (float64, error) {
	raw, err := c.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return 0, fmt.Errorf("apiserver metrics: %w", err)
	}
	var sum float64
	sc := bufio.NewScanner(strings.NewReader(string(raw)))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "apiserver_request_total{") || !strings.Contains(line, `resource="tokenreviews"`) || !strings.Contains(line, `verb="POST"`) {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += v
		}
	}
	return sum, sc.Err()
}
