package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/darkit/protoplex/internal/cluster"
)

// operator runs the etcd sub-commands:
//
//	protoplex register   -etcd HOSTS -protocol P -instance I -address HOST:PORT [-weight N] [-ttl D]
//	protoplex deregister -etcd HOSTS -protocol P -instance I
//	protoplex nodes      -etcd HOSTS
//	protoplex services   -etcd HOSTS
func operator(cmd string, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("protoplex "+cmd, operatorUsage(cmd))
	etcd := fs.String("etcd", os.Getenv("ETCD_ENDPOINTS"), "etcd endpoints, comma-separated (default $ETCD_ENDPOINTS)")
	protocol := fs.String("protocol", "", "protocol name (register, deregister)")
	instance := fs.String("instance", "", "instance name (register, deregister)")
	address := fs.String("address", "", "backend host:port (register)")
	weight := fs.Int("weight", 1, "weight (register)")
	ttl := fs.Duration("ttl", 0, "registration lifetime; 0 keeps it until deregister (register)")
	if code, ok := parse(fs, args, stdout, stderr); !ok {
		return code
	}
	if *etcd == "" {
		fmt.Fprintln(stderr, "protoplex: -etcd or ETCD_ENDPOINTS is required")
		return exitUsage
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(*etcd, ","), DialTimeout: 5 * time.Second})
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitFail
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	switch cmd {
	case "register":
		if *protocol == "" || *instance == "" || *address == "" {
			fmt.Fprintln(stderr, "protoplex register: -protocol, -instance and -address are required")
			return exitUsage
		}
		err = cluster.Register(ctx, cli, cluster.Service{Protocol: *protocol, Instance: *instance, Address: *address, Weight: *weight}, *ttl)
	case "deregister":
		err = cluster.Deregister(ctx, cli, *protocol, *instance)
	case "nodes", "services":
		prefix := cluster.NodesPrefix
		if cmd == "services" {
			prefix = cluster.ServicesPrefix
		}
		var resp *clientv3.GetResponse
		if resp, err = cli.Get(ctx, prefix, clientv3.WithPrefix()); err == nil {
			for _, kv := range resp.Kvs {
				var v map[string]any
				json.Unmarshal(kv.Value, &v)
				b, _ := json.Marshal(v)
				fmt.Fprintf(stdout, "%s %s\n", strings.TrimPrefix(string(kv.Key), prefix), b)
			}
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "protoplex "+cmd+":", err)
		return exitFail
	}
	return exitOK
}
