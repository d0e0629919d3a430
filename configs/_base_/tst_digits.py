# TST settings shared by the demo's and the study's TST runs on the generated digits,
# used as a second `_base_` next to the student's config: the augmenter, its optimizer
# and the DDP wrapper (./tst_distiller.py, which says how a config wires them in) and
# the policy hook. Each config sets its own augment phases.
_base_ = './tst_distiller.py'

# The learned policy in the log and in work_dir/policy.png, after every phase.
custom_hooks = [dict(type='TSTPolicyHook', interval=100)]
