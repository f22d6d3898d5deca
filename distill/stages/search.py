"""The ``search`` stage: a backbone for the student, found before the other stages train it."""

from __future__ import annotations

from distill.stages.base import RunContext, Stage, StageResult, derive
from distill.training import check_model


class SearchStage(Stage):
    """Search a backbone (``search`` section) into ``run_dir/search`` (or ``search.output``);
    the later stages train the student with the structure found. ``resume: true`` continues
    (or, when finished, just reads) the search saved there."""

    name = "search"

    def run(self, ctx: RunContext) -> StageResult:
        # the search engine: the one line to repoint when it moves
        from distill.search.zero_shot import run_search, search_settings

        recipe = ctx.recipe
        cfg, out_dir = search_settings(recipe)
        out_dir = out_dir if recipe.search.output else ctx.run_dir / "search"
        resume = recipe.resume and (out_dir / "population.json").is_file()
        print(f"== stage search: {cfg.candidates} candidates into {out_dir}"
              f"{' (resumed)' if resume else ''}")
        result = run_search(cfg, out_dir, resume=resume, progress=recipe.trainer.progress_bar)
        structure = str(result.files["structure"])
        searched = derive(recipe, {"model": {"options": {"structure": structure}}})
        check_model(searched.model)
        summary = {"structure": structure, "score": result.score,
                   "candidates": result.candidates, "seconds": round(result.seconds, 1),
                   **result.measures}
        return StageResult(recipe=searched, extra={"search": summary})
