package config

import "strings"

// ApplyEnv overrides the keys a deployment sets per node from the
// environment (getenv is os.Getenv in the CLI; the library never reads the
// environment itself): PROTOPLEX_NODE_ID → distributed.node_id,
// ETCD_ENDPOINTS (comma-separated) → distributed.etcd_endpoints. The result
// is validated again.
func (c *Config) ApplyEnv(getenv func(string) string) error {
	if v := getenv("PROTOPLEX_NODE_ID"); v != "" {
		c.Distributed.NodeID = v
	}
	if v := getenv("ETCD_ENDPOINTS"); v != "" {
		c.Distributed.EtcdEndpoints = strings.Split(v, ",")
		for i, e := range c.Distributed.EtcdEndpoints {
			c.Distributed.EtcdEndpoints[i] = strings.TrimSpace(e) // "a:2379, b:2379"
		}
	}
	return c.Validate()
}
