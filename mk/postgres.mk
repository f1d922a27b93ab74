# PostgreSQL for the storage tests (Optuna and MLflow on a real server), installed the way `make browser` gets
# chromium but without root: Debian's postgresql-$(PG_VERSION) .debs are downloaded with `apt-get download` and
# extracted into $(PG_ROOT) (inside the git-ignored venv). A system PostgreSQL (/usr/lib/postgresql/*/bin) is
# used as is. The tests start their own throwaway server with initdb/pg_ctl on 127.0.0.1 (tests/orchestration).
PG_VERSION ?= 15
PG_ROOT := $(VENV)/postgresql

.PHONY: postgres

postgres:  ## PostgreSQL server binaries for the tests (system ones, or Debian's .debs extracted locally)
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  echo "PostgreSQL: system binaries in $$(dirname $$(ls /usr/lib/postgresql/*/bin/initdb | tail -1))"; \
	elif [ -x $(PG_ROOT)/usr/lib/postgresql/$(PG_VERSION)/bin/initdb ]; then \
	  echo "PostgreSQL: $(PG_ROOT)/usr/lib/postgresql/$(PG_VERSION)/bin"; \
	else \
	  echo "downloading Debian's postgresql-$(PG_VERSION) into $(PG_ROOT)"; \
	  mkdir -p $(PG_ROOT)/debs && cd $(PG_ROOT)/debs && \
	  apt-get download -q postgresql-$(PG_VERSION) postgresql-client-$(PG_VERSION) libpq5 >/dev/null && \
	  for deb in *.deb; do dpkg-deb -x $$deb ..; done && \
	  echo "PostgreSQL: $(PG_ROOT)/usr/lib/postgresql/$(PG_VERSION)/bin"; \
	fi
