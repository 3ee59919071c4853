package metrics

import "github.com/prometheus/client_golang/prometheus"

// RegisterCluster adds protoplex_cluster_last_sync_age_seconds, read from
// age when scraped: how old the node's last current read of etcd is, the
// sign of a node cut off from etcd that still serves. Call it once (a
// cluster node); a second call returns the registry's
// AlreadyRegisteredError.
func (s *Stats) RegisterCluster(age func() float64) error {
	return s.reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "protoplex_cluster_last_sync_age_seconds",
		Help: "Seconds since this node last knew its cluster state current (a watch event or an answered progress request)."}, age))
}
