rule report:
    """One self-contained HTML page: every stage's tables, leaderboards and plots with captions,
    the document sections of report_sections(), the config and provenance, and what failed or
    was skipped (docs/report.md)."""
    input:
        unpack(report_inputs),
    output:
        RESULTS / "report.html",
    params:
        config=settings_json(PLAN.config),
        sections=report_sections_arg,
    log:
        LOGS / "report" / "report.log",
    resources:
        **light_resources(),
    shell:
        "{DRIVER_PYTHON} -m effbench.report --out {output:q} --manifests {input.manifests:q}"
        " --config-json {params.config:q} --config-hash {CONFIG_HASH:q} {params.sections} > {log:q} 2>&1"
