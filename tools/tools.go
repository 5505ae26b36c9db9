//go:build tools

// Package tools pins the servers tillpipe builds from source for its tests,
// `make run` and the bench harness: nats-server and VictoriaMetrics (single
// node and vmagent) come from the versions in go.mod, never from a download.
package tools

import (
	_ "github.com/VictoriaMetrics/VictoriaMetrics/app/victoria-metrics"
	_ "github.com/VictoriaMetrics/VictoriaMetrics/app/vmagent"
	_ "github.com/nats-io/nats-server/v2"
)
