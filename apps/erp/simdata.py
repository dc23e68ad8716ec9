"""The ERP simulator's synthetic data set: deterministic, Chinese, no real person's data.

Plain Python (no Django). Name and company vocabularies come from Faker's zh_CN providers (pinned
version); the choices are made by one `random.Random(seed)` stream, customer after customer, so the
first 239 customers are the same whatever `count` is. Dealers sit at fixed positions
(`index % 120 == 17`): 2 of the default 239, the rest 终端客户, as in the real export.
"""

import random
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

from faker.providers.address.zh_CN import Provider as AddressProvider
from faker.providers.company.zh_CN import Provider as CompanyProvider
from faker.providers.person.zh_CN import Provider as PersonProvider
from faker.providers.phone_number.zh_CN import Provider as PhoneProvider

DEFAULT_SEED = 20240613
DEFAULT_COUNT = 239
FIRST_CUSTOMER_ORD = 3001
FIRST_CONTACT_ORD = 50001
FIRST_CONTRACT_ORD = 70001

# The 13 columns of a customer list row, in the ERP's order.
CUSTOMER_COLUMNS = (
    "ord",
    "name",
    "catename",
    "sortname",
    "sort1name",
    "personname",
    "personjob",
    "phone",
    "mobile",
    "telintro",
    "person",
    "url",
    "personurl",
)
CONTACT_COLUMNS = ("ord", "name", "sex", "job", "phone", "mobile", "email", "company", "companyname")
CONTRACT_COLUMNS = ("ord", "htid", "title", "company", "companyname", "money", "date1", "status")

SOURCES = {"171": "网站注册", "172": "朋友介绍", "173": "陌生开发", "174": "广告宣传", "977": "VIP"}
VALUES = {"175": "很高", "289": "较高", "176": "一般", "177": "较低", "290": "很低"}
TERMINAL, DEALER = "终端客户", "经销商"
TERMINAL_STATUSES = (("潜在客户", 40), ("多次接触", 25), ("重点客户", 15), ("已成交", 20))
DEALER_STATUSES = ("一级经销商", "三级经销商")
JOBS = ("总经理", "采购经理", "采购专员", "技术总监", "财务经理", "行政主管", "项目经理", "老板")
INDUSTRIES = ("机电", "建材", "汽配", "仪器", "环保", "医疗器械", "食品", "物流", "电气", "精密制造", "包装", "化工")
COMPANY_SUFFIXES = ("有限公司", "科技有限公司", "设备有限公司", "贸易有限公司", "工程有限公司")
FOLLOW_UPS = (
    "电话沟通，客户关注报价",
    "已发送产品资料，等待反馈",
    "上门拜访，演示了新款设备",
    "客户询问售后维保政策",
    "微信跟进，约下周见面",
    "客户比较了竞品价格",
    "已报价，客户内部审批中",
    "续签意向明确，准备合同",
)
PRODUCTS = (
    ("工业控制器", 3800),
    ("伺服电机", 2600),
    ("传感器套件", 450),
    ("维保服务（年）", 12000),
    ("安装调试", 3000),
)
CONTRACT_STATUSES = ("执行中", "已完成", "待审批")


@dataclass
class SimContact:
    ord: int
    name: str
    sex: str
    job: str
    phone: str
    mobile: str
    email: str
    company: int


@dataclass
class SimContract:
    ord: int
    htid: str
    title: str
    company: int
    money: Decimal
    date1: date
    status: str
    lines: list[dict] = field(default_factory=list)


@dataclass
class SimCustomer:
    ord: int
    name: str
    catename: str
    sortname: str
    sort1name: str
    phone: str
    mobile: str
    telintro: str
    ly: str
    jz: str
    contacts: list[SimContact] = field(default_factory=list)
    contracts: list[SimContract] = field(default_factory=list)

    def row(self) -> dict:
        primary = self.contacts[0]
        return {
            "ord": self.ord,
            "name": self.name,
            "catename": self.catename,
            "sortname": self.sortname,
            "sort1name": self.sort1name,
            "personname": primary.name,
            "personjob": primary.job,
            "phone": self.phone,
            "mobile": self.mobile,
            "telintro": self.telintro,
            "person": primary.ord,
            "url": f"/sysa/mobilephone/custom/content.asp?ord={self.ord}",
            "personurl": f"/sysa/mobilephone/salesmanage/person/content.asp?ord={primary.ord}",
        }


class _Names:
    def __init__(self, rng: random.Random):
        self.rng = rng
        self.surnames = list(PersonProvider.last_names.keys())
        self.surname_weights = list(PersonProvider.last_names.values())
        self.given = PersonProvider.first_names

    def person(self) -> str:
        surname = self.rng.choices(self.surnames, self.surname_weights)[0]
        given = "".join(self.rng.choice(self.given) for _ in range(self.rng.choice((1, 2, 2))))
        return surname + given

    def mobile(self) -> str:
        return f"{self.rng.choice(PhoneProvider.phonenumber_prefixes)}{self.rng.randrange(10**8):08d}"

    def landline(self) -> str:
        return f"0{self.rng.randrange(10, 999)}-{self.rng.randrange(10**7, 10**8)}"

    def company(self) -> str:
        return (
            self.rng.choice(AddressProvider.cities)
            + self.rng.choice(CompanyProvider.company_prefixes)
            + self.rng.choice(INDUSTRIES)
            + self.rng.choice(COMPANY_SUFFIXES)
        )


def generate(count: int = DEFAULT_COUNT, seed: int = DEFAULT_SEED) -> list[SimCustomer]:
    rng = random.Random(seed)
    names = _Names(rng)
    salespeople = [names.person() for _ in range(8)]
    statuses, weights = zip(*TERMINAL_STATUSES, strict=True)
    contact_ord, contract_ord = FIRST_CONTACT_ORD, FIRST_CONTRACT_ORD
    today = date(2026, 11, 1)
    customers = []
    for index in range(count):
        dealer = index % 120 == 17
        has_phone = rng.random() < 0.2
        customer = SimCustomer(
            ord=FIRST_CUSTOMER_ORD + index,
            name=names.company(),
            catename=rng.choice(salespeople),
            sortname=DEALER if dealer else TERMINAL,
            sort1name=rng.choice(DEALER_STATUSES) if dealer else rng.choices(statuses, weights)[0],
            phone=names.landline() if has_phone else "",
            mobile=names.mobile() if has_phone else "",
            telintro=f"{today - timedelta(days=rng.randrange(400))} {rng.choice(FOLLOW_UPS)}",
            ly=rng.choice(tuple(SOURCES)),
            jz=rng.choice(tuple(VALUES)),
        )
        for position in range(rng.choice((1, 1, 2, 3))):
            customer.contacts.append(
                SimContact(
                    ord=contact_ord,
                    name=names.person(),
                    sex=rng.choice(("男", "女")),
                    job=rng.choice(JOBS) if position else rng.choice(JOBS[:4]),
                    phone=customer.phone if position == 0 else "",
                    mobile=customer.mobile if position == 0 else (names.mobile() if rng.random() < 0.3 else ""),
                    email=f"c{contact_ord}@example.com" if rng.random() < 0.4 else "",
                    company=customer.ord,
                )
            )
            contact_ord += 1
        for _ in range(rng.choice((0, 0, 1, 1, 2, 3))):
            lines = []
            for product, price in rng.sample(PRODUCTS, rng.randint(1, 3)):
                quantity = rng.randint(1, 20)
                lines.append(
                    {"product": product, "num": quantity, "price": f"{price:.2f}", "money": f"{price * quantity:.2f}"}
                )
            signed = today - timedelta(days=rng.randrange(720))
            customer.contracts.append(
                SimContract(
                    ord=contract_ord,
                    htid=f"HT{signed:%Y%m}-{contract_ord:06d}",
                    title=f"{lines[0]['product']}采购合同",
                    company=customer.ord,
                    money=sum((Decimal(line["money"]) for line in lines), Decimal("0")),
                    date1=signed,
                    status=rng.choice(CONTRACT_STATUSES),
                    lines=lines,
                )
            )
            contract_ord += 1
        customers.append(customer)
    return customers
