# Local UIs for the orchestration tools (included from the Makefile). Both bind to 127.0.0.1 only:
# neither server has authentication, so never expose them on 0.0.0.0 (tunnel with `ssh -L` instead).
MLFLOW_PORT ?= 5000
PREFECT_PORT ?= 4200
PREFECT_HOME_DIR ?= $(CURDIR)/.prefect
OPTUNA_PORT ?= 8080
PREFECT_POOL ?= audiopipe
PREFECT_API_URL ?= http://127.0.0.1:$(PREFECT_PORT)/api
STAGE ?= distill_mobilenet
OPTUNA_STORAGE ?= sqlite:///$(CURDIR)/data/sweeps/$(STAGE)/study.db

.PHONY: mlflow-ui prefect-ui plots optuna-ui prefect-deploy prefect-worker

mlflow-ui: install  ## MLflow UI on http://127.0.0.1:$(MLFLOW_PORT) over the embedded sqlite store
	@echo "MLflow 3.17 opens an experiment on its GenAI overview; its training runs are at (or switch the"
	@echo "'GenAI | Model training' toggle at the top left to 'Model training'):"
	@$(BIN)/python -c "import mlflow, sys; from audiopipe.tracking.mlflow import experiment_url; \
		[print('  ' + e.name + ': ' + experiment_url(sys.argv[2], e.experiment_id)) \
		 for e in mlflow.MlflowClient(sys.argv[1]).search_experiments()]" \
		"$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db}" http://127.0.0.1:$(MLFLOW_PORT) 2>/dev/null || true
	$(BIN)/mlflow ui --backend-store-uri "$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db}" \
		--host 127.0.0.1 --port $(MLFLOW_PORT) --workers 1

prefect-ui: install  ## Prefect server + UI on http://127.0.0.1:$(PREFECT_PORT) (sqlite database under .prefect/)
	@echo "clients: export PREFECT_API_URL=http://127.0.0.1:$(PREFECT_PORT)/api; then python flows/serve.py"
	PREFECT_HOME=$(PREFECT_HOME_DIR) $(BIN)/prefect server start --host 127.0.0.1 --port $(PREFECT_PORT)

plots: install  ## the dvc.yaml plots as PNGs + dvc_plots/index.html, offline (PLOTS_REVS=main: compare with main)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python flows/plots.py $(PLOTS_REVS) --out dvc_plots

optuna-ui: install  ## optuna-dashboard on http://127.0.0.1:$(OPTUNA_PORT) for the sweep of STAGE (or OPTUNA_STORAGE=...)
	$(BIN)/optuna-dashboard "$(OPTUNA_STORAGE)" --host 127.0.0.1 --port $(OPTUNA_PORT)

# Deployment on a process work pool + a worker that runs it (next to `python flows/serve.py`); both talk to the
# server at PREFECT_API_URL (make prefect-ui). One worker per checkout: --limit 1 (DVC runs one command at a time).
prefect-deploy: install  ## create pool $(PREFECT_POOL) and deployment audiopipe-pipeline/nightly (CRON="0 2 * * *")
	PREFECT_API_URL=$(PREFECT_API_URL) $(BIN)/python flows/deploy.py --pool $(PREFECT_POOL) $(if $(CRON),--cron "$(CRON)")

prefect-worker: install  ## process worker for pool $(PREFECT_POOL); runs flow runs in this checkout with the venv
	PATH="$(CURDIR)/$(BIN):$$PATH" PREFECT_API_URL=$(PREFECT_API_URL) \
		$(BIN)/prefect worker start --pool $(PREFECT_POOL) --type process --limit 1
