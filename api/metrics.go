package api

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the server's Prometheus metrics, in a registry of its own so
// two servers in one process (tests) do not collide.
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	watches  *prometheus.GaugeVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nexus_api_requests_total", Help: "API requests by verb, resource and HTTP status code.",
		}, []string{"verb", "resource", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "nexus_api_request_duration_seconds", Help: "API request latency by verb and resource (watches: until the stream ends).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 60},
		}, []string{"verb", "resource"}),
		watches: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "nexus_api_watches", Help: "Open watches by resource.",
		}, []string{"resource"}),
	}
	m.reg.MustRegister(m.requests, m.latency, m.watches,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry is where other parts of the server (the store client, the
// controllers) add their metrics.
func (s *Server) Registry() *prometheus.Registry { return s.metrics.reg }

func (m *metrics) observe(verb, resource string, code int, d time.Duration) {
	if verb == "" {
		verb = "unknown"
	}
	m.requests.WithLabelValues(verb, resource, strconv.Itoa(code)).Inc()
	m.latency.WithLabelValues(verb, resource).Observe(d.Seconds())
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}
