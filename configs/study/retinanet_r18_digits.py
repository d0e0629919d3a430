# The study's detection teacher: the demo's RetinaNet (ResNet-18 at half width, from
# scratch, 900 iterations) on the study's digits set (1000 train images; the students
# get the first 200). tools/study/study.py trains it once and caches it.
_base_ = '../demo/retinanet_r18_digits.py'

data_root = 'data/study/coco/'
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator
