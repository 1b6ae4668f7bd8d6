package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The extra images: Prometheus (trellis viz install) and Jaeger (the
// tracing suite). Built from source they cost 10 to 20 minutes cold on
// 2 cores, so `make e2e` starts `extras` in the background before the
// cluster comes up: it builds both (cached), waits for the cluster, imports
// them, and writes extrasStatus, "ok" or the error, which the suites that
// need the images wait for (test/k8se2e needExtraImages). The other suites
// run meanwhile: the builds use the CPU they leave idle while waiting on
// Kubernetes.
const extrasUpTimeout = 90 * time.Minute

func (h *harness) extrasStatus() string { return filepath.Join(h.dir, "extras.status") }
func (h *harness) extrasPID() string    { return filepath.Join(h.dir, "extras.pid") }

// extraTars returns the extra images' tarballs, building what is missing
// (build false: only those already built). Jaeger first: make test's
// TestTracingDemo builds the same binary, a cache hit once this is done.
func (h *harness) extraTars(ctx context.Context, build bool) ([]string, error) {
	var out []string
	for _, f := range []func(context.Context, bool) (string, error){h.collectorImageTar, h.prometheusTar} {
		tar, err := f(ctx, build)
		if err != nil {
			return nil, err
		}
		if tar != "" {
			out = append(out, tar)
		}
	}
	return out, nil
}

// extras builds the extra images, waits for the cluster and imports them;
// the outcome goes to extrasStatus whatever it is.
func (h *harness) extras(ctx context.Context) (err error) {
	if err := os.MkdirAll(h.dir, 0o755); err != nil {
		return err
	}
	os.Remove(h.extrasStatus())
	if err := os.WriteFile(h.extrasPID(), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return err
	}
	defer func() {
		os.Remove(h.extrasPID())
		status := "ok\n"
		if err != nil {
			status = "error: " + err.Error() + "\n"
		}
		if werr := os.WriteFile(h.extrasStatus(), []byte(status), 0o644); werr != nil && err == nil {
			err = werr
		}
	}()
	start := time.Now()
	tars, err := h.extraTars(ctx, true)
	if err != nil {
		return err
	}
	h.log.Info("extra images built", "took", time.Since(start).Round(time.Second))
	if err := poll(ctx, extrasUpTimeout, 2*time.Second, "the cluster to be up", func() (bool, error) {
		ok, why := h.isUp(ctx)
		return ok, errors.New(why)
	}); err != nil {
		return err
	}
	if err := h.importImages(ctx, tars); err != nil {
		return err
	}
	h.log.Info("extra images imported", "images", len(tars), "after", time.Since(start).Round(time.Second))
	return nil
}

// stopExtras ends a background extras run (down calls it: its cluster is
// going away).
func (h *harness) stopExtras() {
	b, err := os.ReadFile(h.extrasPID())
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err == nil {
		h.log.Info("stopped the background extras build", "pid", pid)
	}
	os.Remove(h.extrasPID())
}
