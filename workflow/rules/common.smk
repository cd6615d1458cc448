# Every helper of the rules, and the only reads of the config: the config is validated (its
# defaults filled) and expanded into cells once, here, when the DAG is built, so a bad value
# stops the run before any job starts. Rule files stay declarations.
import re
import shlex

from effbench.data.world import GENERATOR_VERSION as WORLD_VERSION
from effbench.fidelity.job import fidelity_job
from effbench.plan.finetune import finetune_memory_verdicts
from effbench.record import settings_json

try:
    PLAN = cfg.plan(config, CONFIG_LINES)
except cfg.ConfigError as e:
    raise WorkflowError(str(e)) from None

SERVE = PLAN.serve  # quantize / eval / inference cells (empty without a quantize section)
RESULTS = Path(PLAN.config["results"])
LOGS = RESULTS / "logs"
BENCH = RESULTS / "benchmarks"
SCRIPTS = REPO / "scripts"
DATA_PRETRAIN = RESULTS / "data" / "pretrain"
DATA_FINETUNE = RESULTS / "data" / "finetune"
EVAL_TASKS = RESULTS / "data" / "eval"
FINETUNE_DIR = RESULTS / "finetune"
CONFIG_HASH = PLAN.config_hash
SEED = PLAN.config["seed"]
LOAD_POINTS = SERVE.load_points
CLOSED_POINTS = SERVE.points(open_loop=False)  # served by rule inference
OPEN_POINTS = SERVE.points(open_loop=True)  # served by rule inference_open_loop
# Every config value reaches a shell quoted: rules write `{x:q}`; the few shell fragments built
# here (DRIVER_PYTHON, STAGE_PYTHON, stage_launch, *_arg) quote their parts with shlex.quote and
# go in unquoted (tests/workflow/test_hostile_values.py).
# How the shell text starts a script: interpreter and import path, as globals the shell text names
# (`{STAGE_PYTHON[pretrain]}`), never params. Where the checkout and its environments live is no
# experiment setting, and Snakemake records each output's params and input paths (the shell text
# only as written, unexpanded), so a path there re-runs every job of a moved repository.
STAGE_PYTHON = {s: cfg.with_package(shlex.quote(cfg.stage_python(PLAN.config["environments"], s))) for s in cfg.STAGES}
# Light steps (aggregation) run with the driver's own interpreter: no torch there.
DRIVER_PYTHON = cfg.with_package(shlex.quote(sys.executable))

PRETRAIN = {(c.size, c.technique): c for c in PLAN.pretrain}
FINETUNE = {(c.model, c.task, c.method): c for c in PLAN.finetune}
QUANTIZE = {(c.model, c.precision): c for c in SERVE.quantize}
EVALS = {(c.model, c.precision): c for c in SERVE.eval}

if PLAN.memory:
    # The planner's prediction per pretraining cell (cells over cluster.gpu_memory_gb were refused above).
    logger.info("Predicted peak memory per GPU (effbench.plan; cluster.gpu_memory_gb):\n" + "\n".join(
        f"  {v.cell}: {v.predicted_gb:.1f} of {v.allowed_gb:g} GB ("
        + ", ".join(f"{k} {gb:.1f}" for k, gb in v.estimate.as_dict().items() if k != "peak") + ")"
        for v in PLAN.memory))

# Fine-tuning cells against cluster.gpu_memory_gb and cluster.host_memory_gb: a warning here;
# `effbench preflight` checks them against the profile's resources and refuses.
_FT_UNFIT = [v for v in finetune_memory_verdicts(PLAN.config) if not v.fits]
if _FT_UNFIT:
    logger.warning("Fine-tuning cells predicted not to fit, or not planned (effbench.plan.finetune):\n"
                   + "\n".join(f"  {v.message()}" for v in _FT_UNFIT))

if PLAN.missing:
    # Plan on a laptop, run on the cluster: a dry run lists the whole DAG and names what is
    # absent here; a real run stops in onstart (which dry runs skip), before any job starts.
    _lines = "\n".join(f"  config key `{k}`: {p}" for k, p in PLAN.missing)
    logger.warning(f"These input paths do not exist on this machine:\n{_lines}")

    onstart:
        raise WorkflowError(f"Input paths do not exist:\n{_lines}")


def name_pattern(kind):
    """A wildcard's regex: exactly the config's names of that kind (matching nothing if none)."""
    return "|".join(re.escape(n) for n in PLAN.names(kind)) or "(?!)"


wildcard_constraints:
    size=name_pattern("size"),
    technique=name_pattern("technique"),
    # `model` names fine-tuning and serving models alike (both are config names).
    model=name_pattern("model"),
    method=name_pattern("method"),
    task=name_pattern("task"),
    precision=name_pattern("precision"),


# --- environments, launchers, threads and resources ------------------------------------------


def stage_launch(stage, layout_of=None, torchrun_of=None):
    """A params function: the stage's launcher for a layout (the interpreter for one process,
    torchrun on one node, srun + torchrun across nodes, sized from the job's resources): the
    pretraining layout, or ``layout_of(wildcards)`` per cell (fine-tuning); ``torchrun_of``
    (wildcards) forces torchrun for one process. Its paths stay out of the provenance: Snakemake
    records no param computed from a job's threads or resources (a "derived" param)."""

    def launch(wildcards, threads, resources):
        layout = layout_of(wildcards) if layout_of else PLAN.layout
        cpus, gpus = cfg.step_cpus(layout, threads, resources)
        python = cfg.stage_python(PLAN.config["environments"], stage)
        torchrun = bool(torchrun_of and torchrun_of(wildcards))
        return cfg.with_package(cfg.launch_command(python, layout, cpus, gpus, torchrun=torchrun))

    return launch


def stage_env(stage):
    """A params value: the stage's environment by content (its lock and conda files' digests):
    editing one re-runs the jobs that use the stage; moving them re-runs nothing."""
    return cfg.env_digest(stage)


def stage_threads(stage):
    return PLAN.threads(stage)


# A measured job (one whose record has timed figures) never shares the machine: it holds every
# unit of `host_share`, a light job one unit, so light jobs run side by side but never beside a
# measured one. Local scope: the limit governs the jobs this Snakemake runs on its own machine;
# on Slurm each measured job asks for a whole node instead (profiles/slurm, `--exclusive`).
HOST_SHARE = 1000
MEASURED_STAGES = ("pretrain", "finetune", "quantize", "inference")
# A ready measured job goes before a ready light one: the light jobs (exports, scoring, fidelity)
# then wait and run two at a time (1 thread each) once no measured job is ready, instead of one at
# a time between measured jobs. On 2 cores this saves ~2 of the default's ~15 minutes.
MEASURED_PRIORITY = 10
if "host_share" not in workflow.global_resources:
    workflow.register_resource("host_share", HOST_SHARE)


resource_scopes:
    host_share="local",


def stage_resources(stage, layout_of=None):
    """What a stage's job asks for: its share of the host (all of it when measured) and its GPUs
    (pretraining's parallel layout; ``layout_of(wildcards)`` per cell, as fine-tuning's
    ``finetune.parallel``; one GPU for the other GPU stages)."""
    share = {"host_share": HOST_SHARE if stage in MEASURED_STAGES else 1}
    if layout_of is not None:  # one node: the request's keys are the one-GPU layout's, its values per cell
        return {**share, **{k: (lambda w, k=k: cfg.gpu_resources(PLAN.config["device"], layout_of(w))[k])
                            for k in cfg.gpu_resources(PLAN.config["device"], cfg.ONE_GPU)}}
    gpus = cfg.gpu_resources(PLAN.config["device"], PLAN.layout if stage == "pretrain" else cfg.ONE_GPU)
    return {**share, **gpus}


def light_resources():
    """A light job (data, export, aggregation): one share of the host, no GPU."""
    return {"host_share": 1}


# --- settings (params) --------------------------------------------------------------------------


def cell_settings(cells, *keys):
    """A params function: the resolved settings of the job's cell, looked up by its wildcards."""
    return lambda w: settings_json(cells[tuple(getattr(w, k) for k in keys)].settings)


def data_settings():
    return settings_json(PLAN.config["data"]["pretrain"])


def task_settings(wildcards):
    return settings_json(PLAN.config["finetune"]["tasks"][wildcards.task])


def serving_job_settings(wildcards):
    """Every closed-loop load point of one model × precision (one engine load serves them all)."""
    return settings_json(SERVE.serving_job(wildcards.model, wildcards.precision))


def open_loop_job_settings(wildcards):
    """Every open-loop load point of one model × precision (one engine load serves them all)."""
    return settings_json(SERVE.serving_job(wildcards.model, wildcards.precision, open_loop=True))


def folder_of(files, name=0):
    """A params function: the folder of one of the job's ``input`` or ``output`` files (by name,
    or the first), so that no shell command needs `dirname`."""

    def folder(wildcards, input, output):
        io = input if files == "input" else output
        return str(Path(io[name] if isinstance(name, int) else getattr(io, name)).parent)

    return folder


# --- models --------------------------------------------------------------------------------------


def export_inputs(source):
    """The export_hf outputs a `pretrained: <size>/<technique>` reference stands for; nothing for
    a Hugging Face id or a local path."""
    if source.kind != "pretrained":
        return []
    w = {"size": source.export.size, "technique": source.export.technique}
    return [rules.export_hf.output.config.format(**w), rules.export_hf.output.weights.format(**w)]


def model_location(source):
    """What a stage loads: the export's folder, the local directory or the Hugging Face id."""
    if source.kind == "pretrained":
        return str(Path(export_inputs(source)[0]).parent)
    return source.ref


def finetune_model_inputs(w):
    return export_inputs(FINETUNE[(w.model, w.task, w.method)].source)


def finetune_model_path(w):
    return model_location(FINETUNE[(w.model, w.task, w.method)].source)


def finetune_layout(w):
    """A fine-tuning cell's layout: finetune.parallel.gpus (or its model's gpus) on one node."""
    return cfg.finetune_layout(FINETUNE[(w.model, w.task, w.method)].settings)


def finetune_needs_torchrun(w):
    """DeepSpeed needs a launched process group, even for one GPU (LlamaFactory: FORCE_TORCHRUN)."""
    return cfg.deepspeed_config(FINETUNE[(w.model, w.task, w.method)].settings) is not None


def quantize_inputs(w):
    """The model's export (if it is the pipeline's own) and, for calibrated int4, the corpus."""
    cell = QUANTIZE[(w.model, w.precision)]
    out = {"source": export_inputs(cell.source)}
    if cfg.needs_calibration(cell.settings):
        out["corpus"] = rules.pretrain_data.output.train
    return out


def quantize_source_arg(w):
    source = QUANTIZE[(w.model, w.precision)].source
    return "" if source.kind == "hf" else "--source-dir " + shlex.quote(model_location(source))


def quantize_data_arg(w):
    calibrated = cfg.needs_calibration(QUANTIZE[(w.model, w.precision)].settings)
    return f"--data-dir {shlex.quote(str(DATA_PRETRAIN))}" if calibrated else ""


# --- evaluation tasks ------------------------------------------------------------------------------


def eval_items_per_task():
    return (SERVE.local_eval or {}).get("items_per_task", 0)


def eval_task_inputs(wildcards):
    """The pipeline's own multiple-choice tasks, when an eval cell scores them."""
    return [rules.eval_tasks.output[0]] if SERVE.local_eval else []


def eval_include_arg():
    return f"--include-path {shlex.quote(str(EVAL_TASKS))}" if SERVE.local_eval else ""


# --- fidelity ------------------------------------------------------------------------------------


FIDELITY_FILE = RESULTS / "fidelity" / "{model}" / "{precision}" / "fidelity.json"


def model_checkpoints(w):
    """Every served precision's checkpoint of the job's model (the baseline's among them): inputs
    of the fidelity job and of each inference job, which serve all of a model's precisions with
    one engine (effbench.inference.engine_choice.model_engine decides it from all of them)."""
    return [rules.quantize.output.model.format(model=w.model, precision=p) for p in SERVE.precisions_of(w.model)]


def model_dirs_arg(w):
    """`precision=checkpoint-folder` for each of model_checkpoints, quoted for the shell."""
    return " ".join(shlex.quote(f"{p}={Path(m).parent}") for p, m in zip(SERVE.precisions_of(w.model), model_checkpoints(w)))


def model_precisions_arg(w):
    """Every precision the job's model is served at, quoted for the shell (one engine per model)."""
    return " ".join(shlex.quote(p) for p in SERVE.precisions_of(w.model))


def models_pattern(models):
    """A wildcard constraint matching exactly these models (nothing if none)."""
    return "|".join(re.escape(m) for m in models) or "(?!)"


def fidelity_settings(w):
    """What a fidelity job compares: every served precision of the model against the baseline,
    each with the engine settings the inference stage serves it with."""
    return settings_json(fidelity_job(SERVE, w.model, stage_threads("eval")))


# --- aggregation ---------------------------------------------------------------------------------


def skip_bad_records_arg():
    """`aggregate.skip_bad_records`: leave unreadable or misplaced records out (listed), not fail."""
    return "--skip-bad-records" if PLAN.config["aggregate"]["skip_bad_records"] else ""


# --- targets --------------------------------------------------------------------------------------


def pretrain_records(wildcards):
    return [rules.pretrain.output.record.format(size=c.size, technique=c.technique) for c in PLAN.pretrain]


def export_targets():
    return [rules.export_hf.output.config.format(size=c.size, technique=c.technique) for c in PLAN.exported]


def finetune_records(wildcards):
    return [rules.finetune.output.record.format(model=c.model, task=c.task, method=c.method)
            for c in PLAN.finetune]


def quantize_records(wildcards):
    return [rules.quantize.output.record.format(model=c.model, precision=c.precision) for c in SERVE.quantize]


def eval_scores(wildcards):
    return [rules.evaluate.output[0].format(model=c.model, precision=c.precision) for c in SERVE.eval]


def inference_records(wildcards):
    return [RESULTS / "inference" / c.model / c.precision / c.load_point / "record.parquet" for c in SERVE.inference]


def fidelity_files(wildcards):
    """Every served model × precision's fidelity to its baseline."""
    served = sorted({(c.model, c.precision) for c in SERVE.inference})
    return [str(FIDELITY_FILE).format(model=m, precision=p) for m, p in served]


def stage_manifests(wildcards):
    out = [rules.aggregate_pretrain.output.manifest]
    if PLAN.finetune:
        out.append(rules.aggregate_finetune.output.manifest)
    if SERVE.quantize:
        out.append(rules.aggregate_quantize.output.manifest)
    if SERVE.inference:
        out.append(rules.aggregate_inference.output.manifest)
    return out


def recommend_settings():
    """The `recommend:` constraints (schema defaults filled): the decision rule's params."""
    return settings_json(PLAN.config["recommend"])


# --- report ----------------------------------------------------------------------------------------


def report_sections():
    """Sections of the report made of other rules' files, each (title, files, folders): files are
    the rule's inputs (Markdown rendered with the images it names embedded, PNG/SVG embedded, CSV
    shown as a table, JSON as text); folders (optional) are read when the report runs, not
    inputs: every PNG/SVG in them that the Markdown did not show is embedded after it. The
    stages' own tables, leaderboards and plots come from their manifests."""
    decision = RESULTS / "decision"
    # no plots folder: pareto.md and scaling.md embed every plot of theirs, and a shared folder
    # would show the scaling plots again under the Pareto section
    return [("Pareto fronts across objectives and axes", [decision / "pareto.md"]),
            ("Scaling with model size", [decision / "scaling.md"]),
            ("Recommendation for the config's constraints", [decision / "recommend.md"])]


def report_inputs(wildcards):
    """Everything the report shows: each configured stage's manifest (naming its tables,
    leaderboard and plots), the records behind them, and the document sections' files."""
    records = [*pretrain_records(wildcards), *finetune_records(wildcards), *quantize_records(wildcards),
               *inference_records(wildcards)]
    return {"manifests": stage_manifests(wildcards), "records": records,
            "documents": [f for _, files, *_ in report_sections() for f in files]}


def report_sections_arg(wildcards):
    """The sections as `--section TITLE FILE...` arguments (quoted here: they go in unquoted)."""
    return " ".join("--section " + " ".join(shlex.quote(str(x)) for x in (title, *files, *(folders or [[]])[0]))
                    for title, files, *folders in report_sections())


def all_targets():
    return [rules.summary.output[0], rules.report.output[0], *export_targets(), *rules.decision.output]
