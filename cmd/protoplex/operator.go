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
	etcd := fs.String("etcd", os.Getenv("ETCD_ENDPOINTS"), "etcd `endpoints`, comma-separated (default $ETCD_ENDPOINTS)")
	// Each command defines only the flags it reads.
	var protocol, instance, address string
	var weight int
	var ttl time.Duration
	if cmd == "register" || cmd == "deregister" {
		fs.StringVar(&protocol, "protocol", "", "protocol `name` the backend serves, as in the configuration (SSH, HTTP, ...)")
		fs.StringVar(&instance, "instance", "", "instance `name`, unique within the protocol")
	}
	if cmd == "register" {
		fs.StringVar(&address, "address", "", "backend `host:port`")
		fs.IntVar(&weight, "weight", 1, "weight for weighted balancing")
		fs.DurationVar(&ttl, "ttl", 0, "registration lifetime; 0 keeps it until deregister")
	}
	if code, ok := parse(fs, args, stdout, stderr); !ok {
		return code
	}
	if *etcd == "" {
		fmt.Fprintln(stderr, "protoplex "+cmd+": -etcd or ETCD_ENDPOINTS is required")
		return exitUsage
	}
	switch {
	case cmd == "register" && (protocol == "" || instance == "" || address == ""):
		fmt.Fprintln(stderr, "protoplex register: -protocol, -instance and -address are required")
		return exitUsage
	case cmd == "deregister" && (protocol == "" || instance == ""):
		fmt.Fprintln(stderr, "protoplex deregister: -protocol and -instance are required")
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
		err = cluster.Register(ctx, cli, cluster.Service{Protocol: protocol, Instance: instance, Address: address, Weight: weight}, ttl)
	case "deregister":
		err = cluster.Deregister(ctx, cli, protocol, instance)
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
