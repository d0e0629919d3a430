# The study's detection TST arm: the demo's TST pair on the study's data, augment phases
# of one pass over the 200 training images (25 batches of 8) before iterations 1, 101
# and 201 of 300. The other arms are this config with options (tools/study/study.py).
_base_ = '../demo/tst_retinanet_r18_r18-narrow_digits.py'

data_root = 'data/study/coco/'
teacher_ckpt = 'work_dirs/study/det/teacher/iter_900.pth'
model = dict(teacher='{{fileDirname}}/retinanet_r18_digits.py', teacher_ckpt=teacher_ckpt)
train_dataloader = dict(dataset=dict(data_root=data_root, indices=200))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator
train_cfg = dict(augment_steps=25)
