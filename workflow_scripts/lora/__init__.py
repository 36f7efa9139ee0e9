"""PEFT LoRA adapters: read, merged exactly as adapters, written, trained, and their Fishers.

An adapted model is ``W0 + s B A`` on each adapted weight of a shared base.  Modules:

``config``   ``adapter_config.json`` against an allow list (refused by name: DoRA, aLoRA, ...)
``folder``   an adapter folder read inside itself and checked against its base (:class:`Base`)
``lowrank``  a weight's factors; folding row / column / scalar weights; SVD factoring
``dense``    each model's dense delta, formed in float64; the union of targets
``merge``    averaging, task arithmetic, mask Fisher (every scheme) and RegMean as exact
             low-rank merges (rank ``sum_j r_j``); truncated adapters for the other methods
``writer``   a merge written as a PEFT adapter folder with its model card
``fisher``   mask Fisher and Grams of an unmerged ``PeftModel``
``train``    a LoRA fine-tune with peft
``testing``  tiny adapters with random non-zero factors

Standalone: the merge engine, rules and schema do not use it yet.
"""
