"""Each elastic module against slicing the plain module's weights by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_nas.elastic import (
    ELASTIC_TYPES,
    ElasticBatchNorm2d,
    ElasticConv2d,
    ElasticEmbedding,
    ElasticLayerNorm,
    ElasticLinear,
    ElasticModuleList,
    ElasticSequential,
)


def test_linear_matches_manual_slice_and_dense() -> None:
    plain = nn.Linear(10, 6)
    layer = ElasticLinear.convert(plain)
    assert layer.weight is plain.weight  # shares, does not copy
    x = torch.randn(4, 7)
    layer.active_in, layer.active_out = 7, 3
    expected = x @ plain.weight[:3, :7].T + plain.bias[:3]
    torch.testing.assert_close(layer(x), expected)
    dense = layer.to_dense()
    assert type(dense) is nn.Linear and dense.weight.shape == (3, 7)
    assert dense.weight.data_ptr() != plain.weight.data_ptr()
    torch.testing.assert_close(dense(x), expected)


def test_linear_full_size_is_the_plain_computation() -> None:
    plain = nn.Linear(5, 4)
    x = torch.randn(2, 5)
    expected = plain(x)
    torch.testing.assert_close(ElasticLinear.convert(plain)(x), expected)


def test_linear_with_index_tensor_input() -> None:
    plain = nn.Linear(8, 2)
    layer = ElasticLinear.convert(plain)
    index = torch.tensor([0, 1, 4, 5, 6])
    layer.active_in = index
    x = torch.randn(3, 5)
    torch.testing.assert_close(layer(x), x @ plain.weight[:, index].T + plain.bias)


def test_conv_channels_and_kernel_crop() -> None:
    plain = nn.Conv2d(6, 8, 5, padding=2)
    conv = ElasticConv2d.convert(plain)
    conv.active_in, conv.active_out, conv.active_kernel = 4, 5, 3
    x = torch.randn(2, 4, 9, 9)
    expected = F.conv2d(x, plain.weight[:5, :4, 1:4, 1:4], plain.bias[:5], padding=1)
    torch.testing.assert_close(conv(x), expected)
    dense = conv.to_dense()
    assert (dense.in_channels, dense.out_channels, dense.kernel_size, dense.padding) == (4, 5, (3, 3), (1, 1))
    torch.testing.assert_close(dense(x), expected)


def test_depthwise_conv_follows_its_channels() -> None:
    plain = nn.Conv2d(6, 6, 3, padding=1, groups=6)
    conv = ElasticConv2d.convert(plain)
    conv.active_out = 4
    x = torch.randn(1, 4, 5, 5)
    expected = F.conv2d(x, plain.weight[:4], plain.bias[:4], padding=1, groups=4)
    torch.testing.assert_close(conv(x), expected)
    dense = conv.to_dense()
    assert dense.groups == 4
    torch.testing.assert_close(dense(x), expected)


def test_batchnorm_updates_shared_statistics_prefix() -> None:
    plain = nn.BatchNorm2d(6)
    bn = ElasticBatchNorm2d.convert(plain)
    bn.active_features = 4
    x = torch.randn(8, 4, 3, 3) * 3 + 1
    out = bn(x)
    torch.testing.assert_close(out, F.batch_norm(x, None, None, plain.weight[:4], plain.bias[:4], True))
    torch.testing.assert_close(plain.running_mean[:4], 0.1 * x.mean((0, 2, 3)))
    assert torch.all(plain.running_mean[4:] == 0)  # inactive channels untouched
    bn.eval()
    torch.testing.assert_close(
        bn(x), F.batch_norm(x, plain.running_mean[:4], plain.running_var[:4], plain.weight[:4], plain.bias[:4], False)
    )
    dense = bn.to_dense().eval()
    torch.testing.assert_close(dense(x), bn(x))


def test_batchnorm_with_index_tensor_writes_statistics_back() -> None:
    plain = nn.BatchNorm2d(6)
    bn = ElasticBatchNorm2d.convert(plain)
    index = torch.tensor([0, 1, 3, 4])
    bn.active_features = index
    x = torch.randn(8, 4, 2, 2) + 5
    bn(x)
    torch.testing.assert_close(plain.running_mean[index], 0.1 * x.mean((0, 2, 3)))
    assert plain.running_mean[2] == 0 and plain.running_mean[5] == 0


def test_layernorm_normalises_active_features_only() -> None:
    plain = nn.LayerNorm(8)
    with torch.no_grad():
        plain.weight.uniform_()
    norm = ElasticLayerNorm.convert(plain)
    norm.active_features = 5
    x = torch.randn(3, 5)
    expected = F.layer_norm(x, (5,), plain.weight[:5], plain.bias[:5])
    torch.testing.assert_close(norm(x), expected)
    torch.testing.assert_close(norm.to_dense()(x), expected)


def test_embedding_slices_the_embedding_dimension() -> None:
    plain = nn.Embedding(20, 8, padding_idx=0)
    emb = ElasticEmbedding.convert(plain)
    emb.active_out = 3
    ids = torch.tensor([[0, 4, 19]])
    torch.testing.assert_close(emb(ids), plain.weight[ids][..., :3])
    dense = emb.to_dense()
    assert dense.embedding_dim == 3 and dense.padding_idx == 0
    torch.testing.assert_close(dense(ids), emb(ids))


def test_sequential_and_modulelist_skip_blocks() -> None:
    blocks = [nn.Linear(4, 4) for _ in range(3)]
    seq = ElasticSequential.convert(nn.Sequential(*blocks))
    seq.skipped = frozenset({1})
    x = torch.randn(2, 4)
    torch.testing.assert_close(seq(x), blocks[2](blocks[0](x)))
    dense = seq.to_dense()
    assert type(dense) is nn.Sequential and len(dense) == 2
    assert list(dense.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias"]

    modules = ElasticModuleList.convert(nn.ModuleList(blocks))
    modules.skipped = frozenset({0, 2})
    assert list(modules) == [blocks[1]]
    assert len(modules.to_dense()) == 1


def test_convert_keeps_hooks_and_state_dict_keys() -> None:
    plain = nn.Linear(3, 3)
    calls = []
    plain.register_forward_hook(lambda *args: calls.append(1))
    layer = ElasticLinear.convert(plain)
    layer(torch.randn(1, 3))
    assert calls == [1]
    assert list(layer.state_dict()) == list(plain.state_dict())


@pytest.mark.parametrize(
    ("module", "lengths", "attrs", "default_role"),
    [
        (nn.Linear(6, 4), {"in": 6, "out": 4}, {"in": "active_in", "out": "active_out"}, None),
        (nn.Conv2d(3, 8, 3), {"in": 3, "out": 8}, {"in": "active_in", "out": "active_out"}, "out"),
        (nn.BatchNorm1d(5), {"features": 5}, {"features": "active_features"}, "features"),
        (nn.BatchNorm2d(7), {"features": 7}, {"features": "active_features"}, "features"),
        (nn.LayerNorm(9), {"features": 9}, {"features": "active_features"}, "features"),
        (nn.LayerNorm((2, 9)), {}, {"features": "active_features"}, "features"),  # no single features axis
        (nn.Embedding(10, 12), {"out": 12}, {"out": "active_out"}, "out"),
        (nn.Sequential(nn.ReLU()), {}, {}, None),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else None,
)
def test_each_elastic_type_answers_for_its_axes(module, lengths, attrs, default_role) -> None:
    cls = ELASTIC_TYPES[type(module)]
    assert cls.axis_lengths(module) == lengths
    assert {role: axis.active for role, axis in cls.elastic_axes.items()} == attrs
    assert cls.default_role == default_role
    for role, length in lengths.items():
        assert cls.axis_length(module, role) == length
        assert cls.active_attr(role) == attrs[role]


def test_an_axis_an_elastic_type_lacks_is_named() -> None:
    with pytest.raises(ValueError, match=r"ElasticLinear has no elastic axis 'features'; its axes: \['in', 'out'\]"):
        ElasticLinear.active_attr("features")
    with pytest.raises(ValueError, match="LayerNorm has no elastic 'features' axis"):
        ElasticLayerNorm.axis_length(nn.LayerNorm((2, 9)), "features")
