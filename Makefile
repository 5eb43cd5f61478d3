# caddy-crudauth. `make run` runs the example gateway, `make test` runs every test.
SHELL := /bin/bash
GO ?= go
CADDY_VERSION ?= v2.11.9
XCADDY_VERSION ?= v0.4.5
# The placeholder version xcaddy needs while the module is unpublished.
LOCAL_VERSION := v0.0.0-00010101000000-000000000000
EXAMPLE_DB ?= .crudauth/example.db
FUZZTIME ?= 10m

.PHONY: all build xcaddy run demo test test-unit test-race fuzz bench bench-quick vet fmt clean

all: build

build:
	$(GO) build -o bin/caddy ./cmd/caddy

# The same program, built the way users build it.
xcaddy:
	$(GO) install github.com/caddyserver/xcaddy/cmd/xcaddy@$(XCADDY_VERSION)
	XCADDY_SKIP_CLEANUP=0 $$($(GO) env GOPATH)/bin/xcaddy build $(CADDY_VERSION) \
		--output bin/caddy-xcaddy \
		--with github.com/crudauth/caddy-crudauth@$(LOCAL_VERSION)=.
	bin/caddy-xcaddy list-modules | grep -x 'http.handlers.crudauth'

# Runs Caddyfile.example: the gateway on localhost:8080 in front of a demo
# backend on localhost:8081. On first run it creates the demo user alice.
run: build
	@scripts/ensure-demo-user.sh bin/caddy $(EXAMPLE_DB)
	CRUDAUTH_DB=$(EXAMPLE_DB) bin/caddy run --config Caddyfile.example --adapter caddyfile

# A throwaway database and user, the example started, the recipe's curl flow
# printed request by request, everything stopped again.
demo: build
	scripts/demo.sh

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l .)" || { echo "gofmt needed:"; gofmt -l .; exit 1; }

# Every test: unit, conformance, Caddyfile adapt, integration, fuzz seed corpora.
# The Caddy-free packages run under the race detector; the Caddy-facing
# package (integration tests with an in-process Caddy) runs without it to
# stay well inside CI's time on 2 cores.
test: vet
	$(GO) test -race -count=1 -timeout 5m ./internal/...
	$(GO) test -count=1 -timeout 8m $$($(GO) list ./... | grep -v /internal/)

fuzz:
	scripts/fuzz.sh $(FUZZTIME)

bench:
	scripts/bench.sh full

bench-quick:
	scripts/bench.sh quick

clean:
	rm -rf bin .crudauth
