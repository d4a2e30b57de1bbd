# imagevol — `make run` brings the whole stack up on this machine; `make test` runs every test
# against real Ceph, Glance, MySQL and Temporal. go-ceph needs the "pacific" build tag.
SHELL := /bin/bash
export GOTOOLCHAIN := local
TAGS := -tags pacific

.PHONY: all build run stop test unit vet shellcheck fmt clean bench ui-screenshot test-faults standalone-proof

all: build

# The gateway, worker and CLI stay small; the Temporal dev server (with its UI) is a separate binary.
build:
	@deploy/install-deps.sh ceph
	go build $(TAGS) -o bin/ ./cmd/imagevol-worker ./cmd/imagevol-gateway ./cmd/imagevolctl ./cmd/imagevol-migrate
	go build -o bin/ ./cmd/imagevol-devserver

run:
	deploy/run.sh

stop:
	deploy/stop.sh

# Performance figures beside their floors, on a stack with two storage hosts: bench/results/.
# BENCH_QUICK=1 for small sizes and counts.
bench:
	deploy/bench.sh

test:
	deploy/test.sh

# The unit tests alone, with no service: workflows on Temporal's test environment, activities on
# in-memory storage and image source and an SQLite store. About a minute.
unit:
	@deploy/install-deps.sh unit
	go test $(TAGS) -count=1 ./...

# Provisions with one part killed or stopped mid-way (worker, Temporal, MariaDB, Ceph OSD, Glance)
# on a stack of its own beside the shared Ceph and Glance, which it stops briefly: run it alone.
test-faults:
	deploy/faults.sh

# Provisions on both storage hosts against a standalone Temporal server on PostgreSQL and MariaDB.
standalone-proof:
	deploy/standalone-proof.sh

# The Temporal UI's workflow list filtered by one image, as docs/ui-filtered-by-image.png; needs
# the `make run` stack up, and installs chromium if it is missing.
ui-screenshot:
	deploy/ui-screenshot.sh

# Every package, the suites behind build tags included.
vet:
	go vet -tags 'pacific e2e mysql faults standalone' ./...
	go run go.temporal.io/sdk/contrib/tools/workflowcheck@v0.4.0 ./workflows/...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	@$(MAKE) --no-print-directory shellcheck

# Every tracked shell script, following what it sources (.shellcheckrc); deploy/test.sh runs it too.
shellcheck:
	shellcheck -x $$(git ls-files '*.sh' .ci/run)

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin
