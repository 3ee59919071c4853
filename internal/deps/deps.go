package deps
import (
 _ "go.etcd.io/etcd/client/v3"
 _ "go.etcd.io/etcd/server/v3/embed"
 _ "github.com/prometheus/client_golang/prometheus"
 _ "github.com/prometheus/client_golang/prometheus/promhttp"
 _ "github.com/prometheus/common/expfmt"
 _ "gopkg.in/yaml.v3"
 _ "github.com/fsnotify/fsnotify"
 _ "golang.org/x/time/rate"
 _ "go.uber.org/goleak"
 _ "golang.org/x/crypto/ssh"
)
