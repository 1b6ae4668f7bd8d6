// Package chart holds the Trellis Helm chart (this directory) embedded,
// so that `trellis install` renders exactly the templates Helm does.
package chart

import "embed"

// FS holds Chart.yaml, the values files, templates/ (including
// _helpers.tpl) and crds/.
//
//go:embed Chart.yaml values.yaml values-ha.yaml all:templates crds
var FS embed.FS
