// Package report is the bench harness's result: one [Report] per scenario
// run, written as JSON (the source of truth) and rendered from the same
// struct to Markdown, with PNG plots drawn by gonum/plot. Nothing in a
// report is typed by hand: every figure comes from the run that wrote it.
package report

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"tillpipe/bench/internal/fleet"
)

// Report is one scenario run.
type Report struct {
	Scenario string    `json:"scenario"`
	RunID    string    `json:"run_id"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Pass     bool      `json:"pass"`
	Failures []string  `json:"failures,omitempty"`
	Notes    []string  `json:"notes,omitempty"`

	Machine  Machine           `json:"machine"`
	Fleet    Fleet             `json:"fleet"`
	Binaries map[string]string `json:"binaries"` // name -> path, or "unavailable: why"

	// Window is the measured interval (after warm-up) that Stages and
	// Processes cover, in seconds since Started.
	Window    [2]float64 `json:"window_seconds"`
	Stages    []Stage    `json:"stages"`
	Processes []Process  `json:"processes"`
	WAN       WAN        `json:"wan"`
	Delay     []Delay    `json:"delay"`

	Completeness []fleet.Completeness `json:"completeness"`
	Anchor       *Anchor              `json:"anchor,omitempty"`

	Outage        *Outage        `json:"outage,omitempty"`
	Crash         *Crash         `json:"crash,omitempty"`
	BackendOutage *BackendOutage `json:"backend_outage,omitempty"`

	Events   []Event  `json:"events"`
	Timeline []Point  `json:"timeline"`
	Plots    []string `json:"plots"`
}

// Machine is where the run happened.
type Machine struct {
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpu_model"`
	MemBytes  int64  `json:"mem_bytes"`
	Kernel    string `json:"kernel"`
	GoVersion string `json:"go_version"`
	// BusyCores is the whole machine's CPU use over the measured window,
	// and OtherCores the part of it no measured process (nor the harness)
	// accounts for: other work on the machine that competed with the run.
	BusyCores  float64 `json:"busy_cores"`
	OtherCores float64 `json:"other_cores"`
}

// Fleet is the simulated fleet's size and clock.
type Fleet struct {
	Stores        int     `json:"stores"`
	TillsPerStore int     `json:"tills_per_store"`
	SeriesPerTill int     `json:"series_per_till"`
	Services      int     `json:"services_per_till"`
	Accel         float64 `json:"accel"`
	// TargetSamplesPerSec is what the fleet must generate in real time:
	// stores x tills x series x accel / 15 s.
	TargetSamplesPerSec float64   `json:"target_samples_per_sec"`
	SimStart            time.Time `json:"sim_start"`
	SimEnd              time.Time `json:"sim_end"`
	Placement           string    `json:"placement"`
	Generated           int64     `json:"generated_samples"`
	Retries             int64     `json:"retries"`
	MaxBehindSeconds    float64   `json:"max_behind_schedule_seconds"`
}

// Stage is samples through one stage of the pipeline in the window.
type Stage struct {
	Name          string  `json:"name"`
	Source        string  `json:"source"` // the metric it comes from
	Samples       float64 `json:"samples"`
	SamplesPerSec float64 `json:"samples_per_sec"`
}

// Process is one measured process (or group of processes of one role).
type Process struct {
	Name       string  `json:"name"`
	Role       string  `json:"role"` // relay, ingester, nats, backend, vmagent, harness
	Count      int     `json:"count"`
	CPUSeconds float64 `json:"cpu_seconds"`
	PeakRSS    int64   `json:"peak_rss_bytes"`
	// Samples is what this role handled in the window (its stage's count).
	Samples float64 `json:"samples"`
	// CPUSecondsPerMillion = CPUSeconds / (Samples / 1e6).
	CPUSecondsPerMillion float64 `json:"cpu_seconds_per_million_samples"`
	// SamplesPerCoreSecond = Samples / CPUSeconds.
	SamplesPerCoreSecond float64 `json:"samples_per_core_second"`
}

// WAN is the store-to-central traffic.
type WAN struct {
	StreamBytes    float64 `json:"stream_bytes"`
	StreamMessages float64 `json:"stream_messages"`
	UplinkSamples  float64 `json:"uplink_samples"`
	// BytesPerSample = stream bytes / samples the relays published.
	BytesPerSample float64 `json:"stream_bytes_per_sample"`
	// WireBytes is every byte the relays sent on their (proxied) uplinks,
	// NATS protocol included.
	WireBytes          float64 `json:"wire_bytes"`
	WireBytesPerSample float64 `json:"wire_bytes_per_sample"`
	// BackendBytes is the ingester's bytes to the backend.
	BackendBytes          float64 `json:"backend_bytes"`
	BackendBytesPerSample float64 `json:"backend_bytes_per_sample"`
}

// Delay is the end-to-end delay from a sample's send to its visibility in
// the backend, measured on a probe series per till.
type Delay struct {
	Probe string  `json:"probe"`
	Path  string  `json:"path"` // relay or vmagent
	Count int     `json:"count"`
	P50   float64 `json:"p50_seconds"`
	P99   float64 `json:"p99_seconds"`
	Max   float64 `json:"max_seconds"`
}

// Anchor is vmagent, given the same traffic, and our figures as ratios to it.
type Anchor struct {
	VMAgentSamplesPerCoreSecond float64 `json:"vmagent_samples_per_core_second"`
	RelaySamplesPerCoreSecond   float64 `json:"relay_samples_per_core_second"`
	// RelayPerCoreRatio = relay / vmagent samples per core-second (>1: we are cheaper).
	RelayPerCoreRatio            float64 `json:"relay_per_core_ratio"`
	VMAgentBytesPerSample        float64 `json:"vmagent_bytes_per_sample_to_backend"`
	OurBytesPerSample            float64 `json:"our_wan_bytes_per_sample"`
	BytesPerSampleRatio          float64 `json:"wan_bytes_per_sample_ratio"` // ours / vmagent (<1: we send less)
	VMAgentPeakRSS               int64   `json:"vmagent_peak_rss_bytes"`
	RelayPeakRSS                 int64   `json:"relay_peak_rss_bytes"`
	VMAgentDiskBytesPerSample    float64 `json:"vmagent_disk_bytes_per_sample,omitempty"`
	RelayDiskBytesPerSample      float64 `json:"relay_disk_bytes_per_sample,omitempty"`
	DiskBytesPerSampleRatio      float64 `json:"disk_bytes_per_sample_ratio,omitempty"`
	VMAgentBackendBytesPerSample float64 `json:"vmagent_backend_bytes_per_sample"`
}

// Outage is the uplink-outage scenario's result.
type Outage struct {
	SimulatedOutageSeconds    float64 `json:"simulated_outage_seconds"`
	RealOutageSeconds         float64 `json:"real_outage_seconds"`
	UplinkRateBytesPerSec     int64   `json:"uplink_rate_bytes_per_sec"`
	SamplesDuringOutage       float64 `json:"samples_during_outage"`
	RelayDiskBytes            int64   `json:"relay_disk_bytes_at_restore"`
	RelayDiskBytesPerSample   float64 `json:"relay_disk_bytes_per_sample"`
	VMAgentDiskBytes          int64   `json:"vmagent_disk_bytes_at_restore"`
	VMAgentDiskBytesPerSample float64 `json:"vmagent_disk_bytes_per_sample"`
	// LiveVisibleSeconds: from restore until a sample generated after the
	// restore is visible in the backend for every store (-1: never).
	LiveVisibleSeconds float64 `json:"live_visible_seconds"`
	// DrainedSeconds per class: from restore until the relays' backlog of
	// that class is empty (-1: not within the scenario's bound).
	DrainedSeconds map[string]float64 `json:"drained_seconds"`
	// AllArrivedSeconds: from restore until the backend holds every
	// acknowledged sample (-1: not within the bound).
	AllArrivedSeconds float64 `json:"all_arrived_seconds"`
	// VMAgentAllArrivedSeconds: the same for vmagent's copy.
	VMAgentAllArrivedSeconds float64 `json:"vmagent_all_arrived_seconds"`
	// ClassOrder is the classes in the order their backlogs emptied.
	ClassOrder []string `json:"class_order"`
}

// Crash is the crash scenario's result.
type Crash struct {
	Kills []Event `json:"kills"`
}

// BackendOutage is the backend-outage scenario's result.
type BackendOutage struct {
	DownSeconds         float64 `json:"down_seconds"`
	IngesterRSSBefore   int64   `json:"ingester_rss_before_bytes"`
	IngesterPeakRSSDown int64   `json:"ingester_peak_rss_during_bytes"`
	VMAgentRSSBefore    int64   `json:"vmagent_rss_before_bytes"`
	VMAgentPeakRSSDown  int64   `json:"vmagent_peak_rss_during_bytes"`
	StreamBytesBacklog  float64 `json:"stream_bytes_accumulated"`
	VMAgentDiskBytes    int64   `json:"vmagent_disk_bytes_at_restore"`
	RecoveredSeconds    float64 `json:"all_arrived_after_restore_seconds"`
}

// Event marks a moment of the run (outage start, a kill).
type Event struct {
	T    float64 `json:"t_seconds"`
	Name string  `json:"name"`
}

// Point is one monitor sample: cumulative counters (rates are derived
// from consecutive points) and gauges.
type Point struct {
	T        float64            `json:"t"`
	Counters map[string]float64 `json:"counters"`
	Backlog  map[string]float64 `json:"backlog_bytes"` // per class, summed over relays
	// Oldest is the age of the oldest unacknowledged record per class, the
	// highest over relays.
	Oldest map[string]float64 `json:"backlog_oldest_seconds,omitempty"`
	Disk   map[string]float64 `json:"disk_bytes"` // relay, vmagent
	RSS    map[string]float64 `json:"rss_bytes"`  // per role
}

// Write saves r as <dir>/<scenario>.json and .md, with its plots.
func Write(dir string, r *Report) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create results dir %s: %w", dir, err)
	}
	plots, err := Plot(dir, r)
	if err != nil {
		r.Notes = append(r.Notes, "plots: "+err.Error())
	}
	r.Plots = plots
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, r.Scenario+".json"), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write report json: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, r.Scenario+".md"), []byte(Markdown(r)), 0o644); err != nil {
		return fmt.Errorf("write report markdown: %w", err)
	}
	return nil
}

// Read loads <dir>/<scenario>.json.
func Read(dir, scenario string) (*Report, error) {
	b, err := os.ReadFile(filepath.Join(dir, scenario+".json"))
	if err != nil {
		return nil, fmt.Errorf("read report %s: %w", scenario, err)
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("decode report %s: %w", scenario, err)
	}
	return &r, nil
}
