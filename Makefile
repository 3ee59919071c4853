# protoplex — `make test` is what CI runs (.ci/run). It installs the real test
# peers it needs (Debian packages) first, so it works on a fresh machine.
GO       ?= go
PKGS     ?= ./...
TIMEOUT  ?= 20m

.PHONY: all build run test deps vet unit race e2e fuzz bench clean

all: build

build:
	$(GO) build -buildvcs=auto -o bin/protoplex ./cmd/protoplex

run:
	$(GO) run ./cmd/protoplex

## test: install peers, vet, unit tests, then everything (e2e included) under the race detector
test: deps vet unit race

deps:
	bash scripts/install-test-deps.sh

vet:
	$(GO) vet $(PKGS)
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi

## unit: the short tests; the manager's and e2e's once more on the goroutine-per-connection path
## (the event loops serve everything else)
unit:
	$(GO) test -short -count=1 -timeout $(TIMEOUT) $(PKGS)
	PROTOPLEX_TEST_DATA_PLANE=goroutines $(GO) test -short -count=1 -timeout $(TIMEOUT) . ./e2e/...

race:
	PROTOPLEX_REQUIRE_PEERS=1 $(GO) test -race -count=1 -timeout $(TIMEOUT) $(PKGS)

e2e:
	PROTOPLEX_REQUIRE_PEERS=1 $(GO) test -race -count=1 -timeout $(TIMEOUT) ./e2e/...

## fuzz: run every fuzz target briefly (FUZZTIME=10s each)
FUZZTIME ?= 10s
fuzz:
	@for pkg in ./protocols ./internal/identify ./internal/upstream; do \
	  for f in $$($(GO) test -list 'Fuzz.*' $$pkg | grep ^Fuzz); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

bench:
	bash bench/run.sh

clean:
	rm -rf bin
