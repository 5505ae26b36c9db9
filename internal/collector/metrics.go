package collector

// metricType is a series' Prometheus type, for the -once text output.
type metricType uint8

const (
	gauge metricType = iota
	counter
)

func (t metricType) String() string {
	if t == counter {
		return "counter"
	}
	return "gauge"
}

// desc describes one metric: its name (cAdvisor's or node_exporter's where
// one exists), help, type and the names of up to two extra labels.
type desc struct {
	name, help    string
	typ           metricType
	label, label2 string
}

// Per-container metrics from cgroups (cAdvisor's names and sources).
var (
	mCPUUsage         = &desc{name: "container_cpu_usage_seconds_total", help: "Cumulative cpu time consumed in seconds.", typ: counter}
	mCPUUser          = &desc{name: "container_cpu_user_seconds_total", help: "Cumulative user cpu time consumed in seconds.", typ: counter}
	mCPUSystem        = &desc{name: "container_cpu_system_seconds_total", help: "Cumulative system cpu time consumed in seconds.", typ: counter}
	mThrottledPeriods = &desc{name: "container_cpu_cfs_throttled_periods_total", help: "Number of throttled period intervals.", typ: counter}
	mThrottledSeconds = &desc{name: "container_cpu_cfs_throttled_seconds_total", help: "Total time duration the container has been throttled.", typ: counter}
	mMemUsage         = &desc{name: "container_memory_usage_bytes", help: "Current memory usage in bytes, including all memory regardless of when it was accessed."}
	mWorkingSet       = &desc{name: "container_memory_working_set_bytes", help: "Current working set in bytes."}
	mRSS              = &desc{name: "container_memory_rss", help: "Size of RSS in bytes."}
	mCache            = &desc{name: "container_memory_cache", help: "Number of bytes of page cache memory."}
	mMemLimit         = &desc{name: "container_spec_memory_limit_bytes", help: "Memory limit for the container (0: none)."}
	mOOMEvents        = &desc{name: "container_oom_events_total", help: "Count of out of memory events observed for the container.", typ: counter}
	mThreads          = &desc{name: "container_threads", help: "Number of threads running inside the container (pids.current)."}
	mFSReads          = &desc{name: "container_fs_reads_bytes_total", help: "Cumulative count of bytes read.", typ: counter}
	mFSWrites         = &desc{name: "container_fs_writes_bytes_total", help: "Cumulative count of bytes written.", typ: counter}
	// mPressure is indexed by cgroup.PressureCPU/Memory/IO, then waiting
	// (PSI "some") and stalled (PSI "full").
	mPressure = [3][2]*desc{
		{
			{name: "container_pressure_cpu_waiting_seconds_total", help: "Total time duration tasks in the container have waited due to CPU congestion.", typ: counter},
			{name: "container_pressure_cpu_stalled_seconds_total", help: "Total time duration no tasks in the container could make progress due to CPU congestion.", typ: counter},
		},
		{
			{name: "container_pressure_memory_waiting_seconds_total", help: "Total time duration tasks in the container have waited due to memory congestion.", typ: counter},
			{name: "container_pressure_memory_stalled_seconds_total", help: "Total time duration no tasks in the container could make progress due to memory congestion.", typ: counter},
		},
		{
			{name: "container_pressure_io_waiting_seconds_total", help: "Total time duration tasks in the container have waited due to IO congestion.", typ: counter},
			{name: "container_pressure_io_stalled_seconds_total", help: "Total time duration no tasks in the container could make progress due to IO congestion.", typ: counter},
		},
	}
)

// Per-container metrics from the runtime.
var (
	mState     = &desc{name: "till_container_state", help: "1 for the container's current state, 0 for the others.", label: "state"}
	mRestarts  = &desc{name: "till_container_restarts_total", help: "Number of times the runtime restarted the container.", typ: counter}
	mStartTime = &desc{name: "container_start_time_seconds", help: "Start time of the container since unix epoch in seconds."}
	mOOMKilled = &desc{name: "till_container_oom_killed", help: "1 when the container's last exit was an OOM kill."}
	mHealth    = &desc{name: "till_container_health", help: "1 for the container's current healthcheck status, 0 for the others.", label: "status"}
)

// Per-device metrics (node_exporter's names). node_exporter's "device"
// label (network interface) is exported as "exported_device", as Prometheus
// renames a target label clash, because "device" names the till.
var (
	mNodeCPU      = &desc{name: "node_cpu_seconds_total", help: "Seconds the CPUs spent in each mode.", typ: counter, label: "cpu", label2: "mode"}
	mNodeLoad     = [3]*desc{{name: "node_load1", help: "1m load average."}, {name: "node_load5", help: "5m load average."}, {name: "node_load15", help: "15m load average."}}
	mNodeBootTime = &desc{name: "node_boot_time_seconds", help: "Node boot time, in unixtime."}
	mNodeFSSize   = &desc{name: "node_filesystem_size_bytes", help: "Filesystem size in bytes.", label: "fstype", label2: "mountpoint"}
	mNodeFSFree   = &desc{name: "node_filesystem_free_bytes", help: "Filesystem free space in bytes.", label: "fstype", label2: "mountpoint"}
	mNodeFSAvail  = &desc{name: "node_filesystem_avail_bytes", help: "Filesystem space available to non-root users in bytes.", label: "fstype", label2: "mountpoint"}
	mNodeNetRx    = &desc{name: "node_network_receive_bytes_total", help: "Network device statistic receive_bytes.", typ: counter, label: "exported_device"}
	mNodeNetTx    = &desc{name: "node_network_transmit_bytes_total", help: "Network device statistic transmit_bytes.", typ: counter, label: "exported_device"}
	mScrapeErrors = &desc{name: "till_collector_scrape_errors_total", help: "Errors reading each source since the collector started.", typ: counter, label: "source"}
	mNodeMem      []*desc // built from node.MemInfo in init
)

// Sources named in till_collector_scrape_errors_total.
const (
	sourceCgroup = "cgroup"
	sourceDocker = "docker"
	sourceNode   = "node"
)
