package kube

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trellis-mesh/trellis/controller/ca"
	"github.com/trellis-mesh/trellis/controller/k8s/serve"
	"github.com/trellis-mesh/trellis/controller/k8s/tapapi"
	"github.com/trellis-mesh/trellis/controller/tapfan"
)

// DefaultTapAPIAddr is where the tap.trellis.io aggregated API listens
// (the Service's port tap-api; the APIService points at it).
const DefaultTapAPIAddr = ":8089"

// startTapAPI serves the aggregated tap API until ctx ends, with the
// webhook's serving certificate (same Service name, same caBundle) and the
// controller's own identity towards the proxies.
func startTapAPI(ctx context.Context, cfg Config, authority *ca.CA, serving *ca.ServingCert, env serve.Env) error {
	log := cfg.Logger.With("component", "tapapi")
	reloadErrors := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "trellis_controller_tapapi_tls_reload_errors_total",
		Help: "Changes of the tap API's key pair files that were refused (the previous pair keeps serving).",
	})
	if err := env.Metrics.Registry.Register(reloadErrors); err != nil {
		return fmt.Errorf("tap API metrics: %w", err)
	}
	keyPair, err := serve.LoadKeyPairDir(cfg.WebhookTLSDir, log, reloadErrors)
	if err != nil {
		return fmt.Errorf("tap API serving certificate: %w", err)
	}
	srv := &tapapi.Server{
		Client: env.Client, Auth: &tapapi.RequestHeaderSource{Client: env.Client, Refresh: time.Minute},
		TrustDomain: cfg.TrustDomain, Log: log,
		Dialer: &tapfan.Dialer{
			ClientCertificate: func() (*tls.Certificate, error) { return serving.GetCertificate(nil) },
			Roots:             func() *x509.CertPool { return authority.State().Pool },
		},
	}
	if err := srv.Register(env.Metrics.Registry); err != nil {
		return fmt.Errorf("tap API metrics: %w", err)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", cfg.TapAPIAddr)
	if err != nil {
		return fmt.Errorf("tap API listener: %w", err)
	}
	hs := &http.Server{
		Handler:           srv,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       90 * time.Second,
		// The front proxy's certificate is asked for and verified per
		// request against the current requestheader CA (tapapi).
		TLSConfig:   &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: keyPair.GetCertificate, ClientAuth: tls.RequestClientCert},
		ErrorLog:    slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
		_ = hs.Close() // taps are endless streams: cut them
	}()
	go func() {
		if err := hs.ServeTLS(ln, "", ""); !errors.Is(err, http.ErrServerClosed) {
			log.Error("tap API server stopped", "err", err)
		}
	}()
	log.Info("tap API serving", "addr", ln.Addr().String())
	return nil
}
