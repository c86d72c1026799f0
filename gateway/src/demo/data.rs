//! Deterministic synthetic records with realistic shapes: Chinese names, resident IDs with valid
//! check digits, mobile numbers, Wuxi addresses, complaints that mention phones and IDs.

use fedgate_catalog::{Dataset, FieldType, Record, Value};

/// A small deterministic generator (SplitMix64): the same seed gives the same federation.
pub struct Rng(u64);

impl Rng {
    /// Seeded.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// One of `xs`.
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
}

const SURNAMES: &[&str] = &[
    "王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周", "徐", "孙", "马", "朱", "胡", "郭", "何",
    "林", "高", "罗", "钱", "顾", "沈", "陆", "蒋", "华", "欧阳", "诸葛", "司马", "上官",
];
const GIVEN: &[&str] = &[
    "伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明", "超",
    "秀英", "霞", "平", "刚", "桂英", "建国", "志强", "晓东", "雨欣", "子涵", "浩然", "梓萱", "一诺",
];

/// A person's name.
pub fn name(r: &mut Rng) -> String {
    let given = if r.below(3) == 0 {
        format!("{}{}", r.pick(GIVEN), r.pick(GIVEN))
    } else {
        r.pick(GIVEN).to_string()
    };
    format!("{}{}", r.pick(SURNAMES), given)
}

/// A resident ID of a person born 1940–2005 in Wuxi, with a valid MOD 11-2 check digit.
pub fn resident_id(r: &mut Rng) -> String {
    let area = r.pick(&["320202", "320205", "320206", "320211", "320213", "320214", "320281", "320282"]);
    let days = r.below(65 * 365) as i64 + fedgate_policy::time::days_from_civil(1940, 1, 1);
    let (y, m, d) = fedgate_policy::time::civil_from_days(days);
    let body = format!("{area}{y:04}{m:02}{d:02}{:03}", r.below(1000));
    let check = fedgate_policy::pii::resident_id_check(body.as_bytes()).unwrap_or(b'0') as char;
    format!("{body}{check}")
}

/// A mobile number.
pub fn mobile(r: &mut Rng) -> String {
    let prefix =
        r.pick(&["133", "135", "136", "138", "139", "150", "151", "158", "177", "180", "186", "189", "199"]);
    format!("{prefix}{:08}", r.below(100_000_000))
}

/// A region path at the village/community level and its address prefix in Chinese.
pub struct Place {
    /// Region path, e.g. wuxi.liangxi.chongan.guangrui.
    pub region: &'static str,
    /// Address up to the community, e.g. 江苏省无锡市梁溪区崇安寺街道广瑞社区.
    pub address: &'static str,
}

/// Communities of the demo city, all four levels deep.
pub const PLACES: &[Place] = &[
    Place {
        region: "wuxi.liangxi.chongan.guangrui", address: "江苏省无锡市梁溪区崇安寺街道广瑞路"
    },
    Place {
        region: "wuxi.liangxi.chongan.huangnichao", address: "江苏省无锡市梁溪区崇安寺街道黄泥桥"
    },
    Place {
        region: "wuxi.liangxi.guangyi.jiaxian", address: "江苏省无锡市梁溪区广益街道嘉仙路"
    },
    Place {
        region: "wuxi.liangxi.jiangxi.xuelang", address: "江苏省无锡市梁溪区江溪街道雪浪路"
    },
    Place {
        region: "wuxi.xinwu.meicun.taibo", address: "江苏省无锡市新吴区梅村街道泰伯大道"
    },
    Place {
        region: "wuxi.xinwu.shuofang.jichang", address: "江苏省无锡市新吴区硕放街道机场路"
    },
    Place { region: "wuxi.binhu.lihu.hubin", address: "江苏省无锡市滨湖区蠡湖街道湖滨路" },
    Place {
        region: "wuxi.huishan.yanqiao.xizhang", address: "江苏省无锡市惠山区堰桥街道西漳路"
    },
    Place {
        region: "wuxi.xishan.dongting.xishan", address: "江苏省无锡市锡山区东亭街道锡山大道"
    },
];

/// A place whose region lies under `within`.
pub fn place_in<'a>(r: &mut Rng, within: &str) -> &'a Place {
    let options: Vec<&Place> =
        PLACES.iter().filter(|p| p.region == within || p.region.starts_with(&format!("{within}."))).collect();
    options[r.below(options.len() as u64) as usize]
}

fn address(r: &mut Rng, p: &Place) -> String {
    format!(
        "{}{}号{}栋{}单元{}室",
        p.address,
        1 + r.below(300),
        1 + r.below(30),
        1 + r.below(4),
        101 + r.below(20) * 100 + r.below(4)
    )
}

const ISSUES: &[&str] = &[
    "楼上住户长期深夜噪音扰民，多次协商无果",
    "邻居违规占用公共楼道堆放杂物，存在消防隐患",
    "装修公司拖欠工程款，工人多次讨薪未果",
    "物业服务不到位，小区电梯频繁故障",
    "家庭成员因赡养老人问题发生争吵",
    "夫妻因财产分割产生矛盾，要求调解",
    "商铺油烟直排，影响周边居民生活",
    "租客拖欠房租三个月，拒不搬离",
];

const DEMANDS: &[&str] =
    &["要求社区上门调解", "希望相关部门尽快处理", "请求依法维护合法权益", "要求物业和居委会协调"];

/// A free-text complaint that mentions a phone number and, often, an ID.
pub fn complaint(r: &mut Rng, who: &str, phone: &str, id: &str) -> String {
    let issue = r.pick(ISSUES);
    let demand = r.pick(DEMANDS);
    match r.below(3) {
        0 => format!("{who}来电反映{issue}，{demand}。联系电话{phone}，身份证号{id}。"),
        1 => format!("市民反映：{issue}。{demand}，回访电话{phone}。"),
        _ => format!("{issue}，当事人{who}（身份证{id}）{demand}，可拨打{phone}联系。"),
    }
}

fn date(r: &mut Rng) -> (i64, u32, u32) {
    let days = fedgate_policy::time::days_from_civil(2024, 1, 1) + r.below(700) as i64;
    fedgate_policy::time::civil_from_days(days)
}

/// One record for `ds`, filling each field by its name and kind, within region `within`.
pub fn record(r: &mut Rng, ds: &Dataset, seq: u64, within: &str) -> Record {
    let place = place_in(r, within);
    let person = name(r);
    let phone = mobile(r);
    let id = resident_id(r);
    let (y, m, d) = date(r);
    let mut out = Vec::with_capacity(ds.fields.len());
    for f in &ds.fields {
        let n = f.name.as_str();
        let v = if n == ds.primary_key {
            Value::Text(format!(
                "{}-{:06}",
                ds.id.as_str().split('-').next().unwrap_or("r").to_uppercase(),
                seq
            ))
        } else if n == ds.jurisdiction {
            Value::Text(place.region.to_owned())
        } else {
            match (f.pii, f.ty) {
                (fedgate_catalog::PiiKind::PersonName, _)
                    if n.contains("respondent") || n.contains("party_b") =>
                {
                    Value::Text(name(r))
                }
                (fedgate_catalog::PiiKind::PersonName, _) => Value::Text(person.clone()),
                (fedgate_catalog::PiiKind::ResidentId, _) => {
                    if f.nullable && r.below(10) == 0 {
                        Value::Null
                    } else {
                        Value::Text(id.clone())
                    }
                }
                (fedgate_catalog::PiiKind::Mobile, _) => Value::Text(phone.clone()),
                (fedgate_catalog::PiiKind::Address, _) => Value::Text(address(r, place)),
                (fedgate_catalog::PiiKind::FreeText, _) => Value::Text(complaint(r, &person, &phone, &id)),
                (_, FieldType::Date) => Value::Text(format!("{y:04}-{m:02}-{d:02}")),
                (_, FieldType::Datetime) => Value::Text(format!(
                    "{y:04}-{m:02}-{d:02}T{:02}:{:02}:00+08:00",
                    8 + r.below(12),
                    r.below(60)
                )),
                (_, FieldType::Integer) if n.contains("age") => Value::Int(18 + r.below(70) as i64),
                (_, FieldType::Integer) => Value::Int(1 + r.below(5) as i64),
                (_, FieldType::Bool) => Value::Bool(r.below(4) == 0),
                (_, FieldType::Decimal) => Value::Text(format!("{}.{:02}", r.below(200_000), r.below(100))),
                (_, FieldType::Region) => Value::Text(place.region.to_owned()),
                _ => Value::Text(r.pick(category_words(n)).to_string()),
            }
        };
        out.push(v);
    }
    out
}

fn category_words(field: &str) -> &'static [&'static str] {
    match field {
        f if f.contains("status") => &["已受理", "处理中", "已办结", "已回访"],
        f if f.contains("channel") => &["电话", "网站", "微信", "APP"],
        f if f.contains("outcome") => &["调解成功", "调解不成", "撤诉", "审理中"],
        f if f.contains("type") || f.contains("category") || f.contains("cause") || f.contains("subject") => {
            &["邻里纠纷", "婚姻家庭", "劳资纠纷", "物业纠纷", "消费纠纷", "房屋租赁", "噪音扰民"]
        }
        _ => &["一般", "重要", "紧急"],
    }
}
