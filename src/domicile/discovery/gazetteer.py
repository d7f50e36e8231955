"""Small word lists the recognizers need: cities, free-mail domains, country-code domains,
street words. Kept short on purpose: a city outside the list is an address without a
country, never a wrong country. A deployment that needs more passes its own list later
(the list is data, not code)."""

from __future__ import annotations

# The largest cities of the countries the packs cover, and a few others often met. Names
# as they are written in the country and in English; a city whose name several countries
# share is left out.
_CITIES: dict[str, tuple[str, ...]] = {
    "RU": (
        "Moscow", "Москва", "Saint Petersburg", "Санкт-Петербург", "Novosibirsk",
        "Новосибирск", "Yekaterinburg", "Екатеринбург", "Kazan", "Казань",
        "Nizhny Novgorod", "Нижний Новгород", "Chelyabinsk", "Челябинск", "Samara",
        "Самара", "Omsk", "Омск", "Rostov-on-Don", "Ростов-на-Дону", "Ufa", "Уфа",
        "Krasnoyarsk", "Красноярск", "Voronezh", "Воронеж", "Perm", "Пермь",
        "Volgograd", "Волгоград", "Krasnodar", "Краснодар", "Vladivostok", "Владивосток",
    ),
    "CN": (
        "Beijing", "北京", "Shanghai", "上海", "Guangzhou", "广州", "Shenzhen", "深圳",
        "Chengdu", "成都", "Chongqing", "重庆", "Wuhan", "武汉", "Hangzhou", "杭州",
        "Nanjing", "南京", "Xi'an", "西安", "Tianjin", "天津",
    ),
    "IN": (
        "Mumbai", "Delhi", "New Delhi", "Bengaluru", "Bangalore", "Hyderabad", "Chennai",
        "Kolkata", "Pune", "Ahmedabad", "Jaipur", "Lucknow", "मुंबई", "दिल्ली",
    ),
    "KZ": ("Almaty", "Алматы", "Astana", "Астана", "Shymkent", "Шымкент", "Karaganda", "Караганда"),
    "DE": (
        "Berlin", "Hamburg", "München", "Munich", "Köln", "Cologne", "Frankfurt am Main",
        "Stuttgart", "Düsseldorf", "Leipzig", "Dortmund", "Dresden",
    ),
    "BR": ("São Paulo", "Rio de Janeiro", "Brasília", "Salvador", "Fortaleza", "Belo Horizonte", "Curitiba", "Recife"),
    "TR": ("İstanbul", "Istanbul", "Ankara", "İzmir", "Izmir", "Bursa", "Antalya", "Adana"),
    "UZ": ("Tashkent", "Toshkent", "Ташкент", "Samarkand", "Samarqand", "Bukhara", "Namangan"),
    "BY": ("Minsk", "Минск", "Gomel", "Гомель", "Vitebsk", "Витебск", "Grodno", "Гродно"),
    "VN": ("Hanoi", "Hà Nội", "Ho Chi Minh City", "Thành phố Hồ Chí Minh", "Da Nang", "Đà Nẵng", "Haiphong"),
    "ID": ("Jakarta", "Surabaya", "Bandung", "Medan", "Semarang", "Makassar"),
    "NG": ("Lagos", "Abuja", "Kano", "Ibadan", "Port Harcourt", "Benin City"),
    "SA": ("Riyadh", "الرياض", "Jeddah", "جدة", "Mecca", "Medina", "Dammam"),
    "CH": ("Zürich", "Zurich", "Geneva", "Genève", "Basel", "Lausanne", "Bern"),
    "FR": ("Paris", "Marseille", "Lyon", "Toulouse", "Nice", "Nantes", "Strasbourg"),
    "US": ("New York", "Los Angeles", "Chicago", "Houston", "Phoenix", "Philadelphia", "San Francisco", "Seattle"),
    "GB": ("London", "Manchester", "Birmingham", "Glasgow", "Edinburgh", "Liverpool"),
}  # fmt: skip

CITIES: dict[str, str] = {name.casefold(): cc for cc, names in _CITIES.items() for name in names}

# Mail services anyone in any country can sign up to: their domains say nothing about
# where the holder lives, even under a country-code domain.
FREE_MAIL: frozenset[str] = frozenset(
    {
        "gmail.com", "googlemail.com", "yahoo.com", "outlook.com", "hotmail.com", "live.com",
        "icloud.com", "me.com", "aol.com", "proton.me", "protonmail.com", "gmx.com", "gmx.net",
        "gmx.de", "web.de", "t-online.de", "mail.ru", "inbox.ru", "list.ru", "bk.ru",
        "yandex.ru", "ya.ru", "yandex.com", "rambler.ru", "qq.com", "163.com", "126.com",
        "sina.com", "rediffmail.com", "yahoo.co.in", "yahoo.com.br", "bol.com.br",
        "uol.com.br", "mail.kz", "yandex.kz", "zoho.com", "tutanota.com", "yahoo.fr",
        "orange.fr", "laposte.net", "hotmail.co.uk", "yahoo.co.uk",
    }
)  # fmt: skip

# Country-code top-level domains that differ from the ISO code, and the ones the scan
# trusts. Generic domains (.com, .org, .io, ...) point nowhere.
TLD_COUNTRY: dict[str, str] = {
    tld: tld.upper()
    for tld in (
        "ru", "cn", "in", "kz", "de", "br", "tr", "uz", "by", "vn", "id", "ng", "sa", "ch",
        "fr", "it", "es", "nl", "pl", "ua", "jp", "kr", "ca", "au", "at", "be", "se", "fi",
        "no", "dk", "cz", "pt", "gr", "hu", "ro", "bg", "ie", "mx", "ar", "za", "eg", "am",
        "az", "ge", "kg", "tj", "tm", "md", "lt", "lv", "ee",
    )
} | {"uk": "GB", "рф": "RU", "su": "RU"}  # fmt: skip

# Words that mark a street address, in the languages of the packs' countries.
STREET_WORDS: frozenset[str] = frozenset(
    {
        "street", "st", "road", "rd", "avenue", "ave", "lane", "boulevard", "blvd", "drive",
        "ул", "улица", "пр", "проспект", "пер", "переулок", "д", "дом", "кв", "шоссе",
        "straße", "strasse", "str", "weg", "platz", "allee", "gasse",
        "rua", "avenida", "av", "cadde", "caddesi", "sokak", "sok", "mahallesi", "mah",
        "rue", "chemin", "marg", "nagar", "jalan", "jl", "đường", "phố", "ko'chasi",
        "köçəsi", "көшесі", "даңғылы", "vulitsa",
    }
)  # fmt: skip
