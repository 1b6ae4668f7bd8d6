package inject

import (
	"io"
	"log/slog"

	corev1 "k8s.io/api/core/v1"
)

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func corev1ResourceName(s string) corev1.ResourceName { return corev1.ResourceName(s) }
