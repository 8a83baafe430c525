"""``agentdistill study``: the paper's claims measured on a laptop, at two student sizes and several seeds.

Methods (:data:`~agentdistill.study.settings.METHODS`): chain-of-thought distillation without and with retrieved
documents, agent distillation, the agent student with SAG, after GRPO and after on-policy distillation. Each
(method, student, seed) is a cell (:mod:`.cells`), trained and evaluated on the same held-out tasks of both
synthetic envs, resumable; the results go to ``results.json``, ``results.md`` and ``results.png`` (:mod:`.report`).
"""
