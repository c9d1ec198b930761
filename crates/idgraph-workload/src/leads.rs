//! Lead files with a known truth: CSV rows of synthetic people, written the way purchased and
//! merged lead lists really spell them, each row tagged with the person it truly is.
//!
//! The population is households at street addresses. A household has a last name, an address
//! (a third of them in apartment buildings, where several households share the street address
//! and differ by unit), and often a landline that all its members give. Each member has a first
//! name, usually a personal email and often a mobile phone, all unique to them; now and then a
//! son shares his father's first name and is told apart by a `Jr`. Rows pick a person at random
//! (so over a quarter of the rows are of someone the file lists more than once), and spell what
//! they give differently each time:
//!
//! - names in title, upper or lower case, sometimes with a title (`Mr.`) or stray spaces;
//! - emails in mixed case, sometimes blank;
//! - phones as `(415) 555-2671`, `415-555-2671`, `415.555.2671`, `+1 415 555 2671`,
//!   `14155552671`...; the `Phone` column holds the landline when the household has one;
//! - streets with their suffix written out or abbreviated (`Street`, `St`, `St.`, `ST`), the
//!   unit in the address line (`Apt 4B`, `#4B`, `Unit 4-B`) or in `Address 2`;
//! - ZIP codes with or without their `+4`, and blank cells anywhere.
//!
//! What no normalization can recover is left in too, as real files have it: a row may give
//! nothing but a name, or a ZIP may be missing so the address cannot be matched. The truth is
//! the person behind each row; [`pairwise`] scores a grouping of the rows against it.
//!
//! Everything about a person derives from the seed and the person's number, so a file of a
//! million rows is written in constant memory.

use std::collections::HashMap;
use std::hash::Hash;
use std::io::{self, Write};

use crate::Rng;

/// The identity columns, first in every file: what the `auto` mapping reads.
pub const IDENTITY_COLUMNS: [&str; 10] = [
    "First Name",
    "Last Name",
    "Email",
    "Phone",
    "Mobile",
    "Address",
    "Address 2",
    "City",
    "State",
    "Zip",
];

/// The first extra columns, by name; further ones are `Custom Field <n>`.
pub const NAMED_EXTRA_COLUMNS: [&str; 8] = [
    "Lead Source",
    "Campaign",
    "Lead Score",
    "Date Added",
    "Income",
    "Opt In",
    "Notes",
    "Record Id",
];

/// What to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeadFileSpec {
    pub rows: u64,
    /// Columns in all, at least the identity columns.
    pub columns: usize,
    pub seed: u64,
}

impl LeadFileSpec {
    pub fn new(rows: u64, columns: usize, seed: u64) -> Self {
        Self {
            rows,
            columns: columns.max(IDENTITY_COLUMNS.len()),
            seed,
        }
    }

    /// Households in the population: 1.6 per row, about 3 persons per row, so a person is
    /// listed about 1.2 times on average among those listed at all.
    fn households(&self) -> u64 {
        (self.rows * 8 / 5).max(1)
    }
}

/// The header line, without its line break.
pub fn header(spec: &LeadFileSpec) -> String {
    let mut names: Vec<String> = IDENTITY_COLUMNS.iter().map(|s| (*s).to_owned()).collect();
    for index in 0..spec.columns - IDENTITY_COLUMNS.len() {
        names.push(match NAMED_EXTRA_COLUMNS.get(index) {
            Some(name) => (*name).to_owned(),
            None => format!("Custom Field {}", index + 1),
        });
    }
    names.join(",")
}

/// Writes the file (header and `spec.rows` rows) and returns the truth: the person behind each
/// row, in row order (row 1 first).
pub fn write_lead_file(spec: &LeadFileSpec, out: &mut impl Write) -> io::Result<Vec<u64>> {
    let mut generator = LeadRows::new(*spec);
    out.write_all(header(spec).as_bytes())?;
    out.write_all(b"\n")?;
    let mut truth = Vec::with_capacity(usize::try_from(spec.rows).unwrap_or(0));
    let mut line = Vec::with_capacity(spec.columns * 12);
    for _ in 0..spec.rows {
        line.clear();
        truth.push(generator.next_row(&mut line));
        line.push(b'\n');
        out.write_all(&line)?;
    }
    Ok(truth)
}

/// The rows of a lead file, one at a time.
#[derive(Debug)]
pub struct LeadRows {
    spec: LeadFileSpec,
    rng: Rng,
    row: u64,
}

/// Most members a household has (person numbers leave room for this many per household).
const MAX_MEMBERS: u64 = 4;

impl LeadRows {
    pub fn new(spec: LeadFileSpec) -> Self {
        Self {
            spec,
            rng: Rng::new(spec.seed ^ 0x6c65_6164_7321),
            row: 0,
        }
    }

    /// Appends the next row (without a line break) and returns the person behind it.
    pub fn next_row(&mut self, line: &mut Vec<u8>) -> u64 {
        self.row += 1;
        let household = Household::of(self.spec.seed, self.rng.below(self.spec.households()));
        let member = self.rng.below(household.members);
        let person = Person::of(self.spec.seed, &household, member);
        let rng = &mut self.rng;
        let mut cells: [String; IDENTITY_COLUMNS.len()] = Default::default();
        let [
            first,
            last,
            email,
            phone,
            mobile,
            address,
            address2,
            city,
            state,
            zip,
        ] = &mut cells;
        let gives_name = rng.below(100) < 97;
        if gives_name {
            *first = spell_name(rng, &person.first_name);
            *last = spell_name(rng, &person.last_name);
            if rng.below(100) < 4 {
                *first = format!("{} {first}", pick(rng, &["Mr.", "Ms.", "Mrs.", "Dr"]));
            }
        }
        if let Some(address_email) = &person.email
            && rng.below(100) < 80
        {
            *email = spell_email(rng, address_email);
        }
        let primary = household.landline.or(person.mobile);
        if let Some(number) = primary
            && rng.below(100) < 80
        {
            *phone = spell_phone(rng, number);
        }
        if let Some(number) = person.mobile
            && rng.below(100) < 55
        {
            *mobile = spell_phone(rng, number);
        }
        if rng.below(100) < 92 {
            let (line1, line2) = household.spell_address(rng);
            *address = line1;
            *address2 = line2;
            *city = spell_name(rng, PLACES[household.place].0);
            *state = if rng.below(100) < 85 {
                PLACES[household.place].1.to_owned()
            } else {
                PLACES[household.place].1.to_lowercase()
            };
            let roll = rng.below(100);
            *zip = if roll < 4 {
                String::new()
            } else if roll < 20 {
                format!("{:05}-{:04}", household.zip, rng.below(10_000))
            } else {
                format!("{:05}", household.zip)
            };
        }
        for (index, cell) in cells.iter().enumerate() {
            if index > 0 {
                line.push(b',');
            }
            push_cell(line, cell);
        }
        for column in 0..self.spec.columns - IDENTITY_COLUMNS.len() {
            line.push(b',');
            extra_cell(rng, column, self.row, line);
        }
        person.id
    }
}

/// A household: where it lives and its landline.
#[derive(Debug, Clone)]
struct Household {
    id: u64,
    members: u64,
    last_name: &'static str,
    number: u64,
    /// A directional before the street name, if any.
    direction: Option<usize>,
    street: &'static str,
    suffix: usize,
    /// The unit, for a household in an apartment building.
    unit: Option<String>,
    place: usize,
    zip: u64,
    landline: Option<u64>,
}

impl Household {
    fn of(seed: u64, id: u64) -> Self {
        // Three in ten households live in buildings of up to eight units: the building, not the
        // household, decides the street address.
        let mut own = Rng::new(mix(seed, 1, id));
        let in_building = own.below(100) < 30;
        let site = if in_building { id / 8 } else { id };
        let mut at = Rng::new(mix(seed, if in_building { 2 } else { 3 }, site));
        let members = match own.below(100) {
            0..50 => 1,
            50..75 => 2,
            75..90 => 3,
            _ => MAX_MEMBERS,
        };
        let place = at.below(PLACES.len() as u64) as usize;
        Self {
            id,
            members,
            last_name: LAST_NAMES[own.below(LAST_NAMES.len() as u64) as usize],
            number: 1 + at.below(9_899),
            direction: (at.below(100) < 12).then(|| at.below(DIRECTIONS.len() as u64) as usize),
            street: STREETS[at.below(STREETS.len() as u64) as usize],
            suffix: at.below(SUFFIXES.len() as u64) as usize,
            unit: in_building.then(|| {
                let floor = 1 + (id % 8) / 2;
                let door = if id.is_multiple_of(2) { 'A' } else { 'B' };
                format!("{floor}{door}")
            }),
            place,
            zip: PLACES[place].2 + at.below(40),
            landline: (own.below(100) < 45).then(|| phone_number(2 * id)),
        }
    }

    /// The address as one row writes it: (address line, second line).
    fn spell_address(&self, rng: &mut Rng) -> (String, String) {
        let mut line = format!("{} ", self.number);
        if let Some(direction) = self.direction {
            line.push_str(pick(rng, DIRECTIONS[direction]));
            line.push(' ');
        }
        line.push_str(self.street);
        line.push(' ');
        line.push_str(pick(rng, SUFFIXES[self.suffix]));
        if rng.below(100) < 10 {
            line = line.to_uppercase();
        }
        let Some(unit) = &self.unit else {
            return (line, String::new());
        };
        let (digits, letter) = unit.split_at(unit.len() - 1);
        let written = match rng.below(6) {
            0 => format!("Apt {unit}"),
            1 => format!("#{unit}"),
            2 => format!("Unit {digits}-{letter}"),
            3 => format!("Apt. {}", unit.to_lowercase()),
            4 => format!("APT {unit}"),
            _ => format!("Suite {unit}"),
        };
        match rng.below(3) {
            0 => (line, written),
            1 => (format!("{line} {written}"), String::new()),
            // A bare unit in the second line.
            _ => (line, unit.clone()),
        }
    }
}

/// A member of a household: names and their own addresses.
#[derive(Debug, Clone)]
struct Person {
    id: u64,
    first_name: String,
    last_name: String,
    email: Option<String>,
    mobile: Option<u64>,
}

impl Person {
    fn of(seed: u64, household: &Household, member: u64) -> Self {
        let id = household.id * MAX_MEMBERS + member;
        let mut own = Rng::new(mix(seed, 4, id));
        let mut family = Rng::new(mix(seed, 5, household.id));
        // Members get distinct first names: one random start, then steps through the list.
        let start = family.below(FIRST_NAMES.len() as u64);
        // An odd step never comes back to a name within four members of a list of 200.
        let step = 1 + 2 * family.below(FIRST_NAMES.len() as u64 / 2 - 1);
        let junior = member == 1 && family.below(100) < 5;
        let index = if junior {
            start
        } else {
            (start + member * step) % FIRST_NAMES.len() as u64
        };
        let first_name = FIRST_NAMES[index as usize].to_owned();
        let mut last_name = if own.below(100) < 12 {
            LAST_NAMES[own.below(LAST_NAMES.len() as u64) as usize].to_owned()
        } else {
            household.last_name.to_owned()
        };
        if junior {
            last_name.push_str(" Jr");
        }
        let email = (own.below(100) < 85).then(|| {
            let domain = pick(&mut own, DOMAINS);
            let local = match own.below(3) {
                0 => format!("{}.{}", first_name, household.last_name),
                1 => format!("{}{}", &first_name[..1], household.last_name),
                _ => format!("{}_{}", first_name, household.last_name),
            };
            // The person's number makes the address theirs alone.
            format!("{}{}@{domain}", local.to_lowercase(), base36(id))
        });
        let mobile = (own.below(100) < 70).then(|| phone_number(2 * id + 1));
        Self {
            id,
            first_name,
            last_name,
            email,
            mobile,
        }
    }
}

/// A distinct, valid North American number for every `n`: an area code from the list, an
/// exchange from 200 to 999 and a line number, spread by an odd multiplier.
fn phone_number(n: u64) -> u64 {
    const PER_AREA: u64 = 800 * 10_000;
    let space = AREA_CODES.len() as u64 * PER_AREA;
    let spread = n.wrapping_mul(2_654_435_761) % space;
    let area = AREA_CODES[(spread / PER_AREA) as usize];
    let rest = spread % PER_AREA;
    let exchange = 200 + rest / 10_000;
    let line = rest % 10_000;
    area * 10_000_000 + exchange * 10_000 + line
}

fn spell_phone(rng: &mut Rng, number: u64) -> String {
    let area = number / 10_000_000;
    let exchange = number / 10_000 % 1_000;
    let line = number % 10_000;
    match rng.below(9) {
        0 | 1 => format!("({area}) {exchange}-{line:04}"),
        2 => format!("{area}-{exchange}-{line:04}"),
        3 => format!("{area}.{exchange}.{line:04}"),
        4 => format!("+1 {area} {exchange} {line:04}"),
        5 => format!("1{area}{exchange}{line:04}"),
        6 => format!("{area}{exchange}{line:04}"),
        7 => format!("+1 ({area}) {exchange}-{line:04}"),
        _ => format!("{area} {exchange} {line:04}"),
    }
}

fn spell_name(rng: &mut Rng, name: &str) -> String {
    let spelled = match rng.below(100) {
        0..72 => name.to_owned(),
        72..92 => name.to_uppercase(),
        _ => name.to_lowercase(),
    };
    if rng.below(100) < 3 {
        format!(" {spelled} ")
    } else {
        spelled
    }
}

fn spell_email(rng: &mut Rng, email: &str) -> String {
    let spelled = match rng.below(100) {
        0..60 => email.to_owned(),
        60..85 => {
            // Capitalized, as a form's autocorrect leaves it.
            let mut chars = email.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_uppercase().chain(chars).collect()
            })
        }
        _ => email.to_uppercase(),
    };
    if rng.below(100) < 4 {
        format!("{spelled} ")
    } else {
        spelled
    }
}

/// One cell of an extra column: scores, dates, categories, amounts, text, flags, ids, blanks.
fn extra_cell(rng: &mut Rng, column: usize, row: u64, line: &mut Vec<u8>) {
    let roll = rng.next_u64();
    if roll % 100 < 8 {
        return;
    }
    let value = roll >> 8;
    match column % 8 {
        0 => line.extend_from_slice(pick_by(value, CHANNELS).as_bytes()),
        1 => {
            let _ = write!(line, "spring-{}", value % 40);
        }
        2 => push_number(line, value % 1_000),
        3 => {
            let _ = write!(
                line,
                "20{:02}-{:02}-{:02}",
                18 + value % 8,
                1 + (value >> 4) % 12,
                1 + (value >> 8) % 28
            );
        }
        4 => {
            push_number(line, 20_000 + value % 180_000);
            line.extend_from_slice(b".00");
        }
        5 => line.extend_from_slice(pick_by(value, &["Y", "N", "yes", "no"]).as_bytes()),
        6 => {
            if value.is_multiple_of(4) {
                line.extend_from_slice(b"\"called, left a message\"");
            } else {
                line.extend_from_slice(pick_by(value, WORDS).as_bytes());
            }
        }
        _ => {
            let _ = write!(line, "R{row}-{:x}", value % 0xffff);
        }
    }
}

fn push_number(line: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    line.extend_from_slice(&digits[at..]);
}

/// A CSV cell, quoted when it must be.
fn push_cell(line: &mut Vec<u8>, cell: &str) {
    if cell.contains([',', '"', '\n', '\r']) {
        line.push(b'"');
        line.extend_from_slice(cell.replace('"', "\"\"").as_bytes());
        line.push(b'"');
    } else {
        line.extend_from_slice(cell.as_bytes());
    }
}

fn pick<'a>(rng: &mut Rng, items: &[&'a str]) -> &'a str {
    items[rng.below(items.len() as u64) as usize]
}

fn pick_by<'a>(value: u64, items: &[&'a str]) -> &'a str {
    items[(value % items.len() as u64) as usize]
}

fn mix(seed: u64, what: u64, id: u64) -> u64 {
    let mut rng = Rng::new(seed ^ what.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ id.rotate_left(17));
    rng.next_u64() ^ id
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// Pairwise agreement of a grouping of rows with the truth.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairScores {
    pub rows: u64,
    /// Distinct persons behind the rows.
    pub true_persons: u64,
    /// Distinct persons the rows were put on (rows on no person count as one each).
    pub predicted_persons: u64,
    /// Pairs of rows that are one person.
    pub true_pairs: u64,
    /// Pairs of rows put on one person.
    pub predicted_pairs: u64,
    /// Pairs of rows put on one person that are one person.
    pub correct_pairs: u64,
    /// `correct / predicted` (1 when nothing was put together).
    pub precision: f64,
    /// `correct / true` (1 when no two rows are one person).
    pub recall: f64,
}

/// Scores `predicted` (the person each row was put on; `None` for a row put on no person, as a
/// rejected one) against `truth` (the person each row is), row by row.
///
/// # Panics
///
/// If the two are not of the same length.
pub fn pairwise<P: Eq + Hash>(truth: &[u64], predicted: &[Option<P>]) -> PairScores {
    assert_eq!(truth.len(), predicted.len(), "one prediction per row");
    let pairs = |n: u64| n * n.saturating_sub(1) / 2;
    let mut by_truth: HashMap<u64, u64> = HashMap::new();
    let mut by_prediction: HashMap<&P, u64> = HashMap::new();
    let mut by_both: HashMap<(u64, &P), u64> = HashMap::new();
    let mut unplaced = 0;
    for (person, placed) in truth.iter().zip(predicted) {
        *by_truth.entry(*person).or_default() += 1;
        match placed {
            Some(placed) => {
                *by_prediction.entry(placed).or_default() += 1;
                *by_both.entry((*person, placed)).or_default() += 1;
            }
            None => unplaced += 1,
        }
    }
    let true_pairs: u64 = by_truth.values().map(|n| pairs(*n)).sum();
    let predicted_pairs: u64 = by_prediction.values().map(|n| pairs(*n)).sum();
    let correct_pairs: u64 = by_both.values().map(|n| pairs(*n)).sum();
    let ratio = |part: u64, whole: u64| {
        if whole == 0 {
            1.0
        } else {
            part as f64 / whole as f64
        }
    };
    PairScores {
        rows: truth.len() as u64,
        true_persons: by_truth.len() as u64,
        predicted_persons: by_prediction.len() as u64 + unplaced,
        true_pairs,
        predicted_pairs,
        correct_pairs,
        precision: ratio(correct_pairs, predicted_pairs),
        recall: ratio(correct_pairs, true_pairs),
    }
}

#[rustfmt::skip]
const FIRST_NAMES: &[&str] = &[
    "James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David",
    "Elizabeth", "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah",
    "Charles", "Karen", "Christopher", "Lisa", "Daniel", "Nancy", "Matthew", "Betty", "Anthony",
    "Margaret", "Mark", "Sandra", "Donald", "Ashley", "Steven", "Kimberly", "Paul", "Emily",
    "Andrew", "Donna", "Joshua", "Michelle", "Kenneth", "Carol", "Kevin", "Amanda", "Brian",
    "Dorothy", "George", "Melissa", "Timothy", "Deborah", "Ronald", "Stephanie", "Edward",
    "Rebecca", "Jason", "Sharon", "Jeffrey", "Laura", "Ryan", "Cynthia", "Jacob", "Kathleen",
    "Gary", "Amy", "Nicholas", "Angela", "Eric", "Shirley", "Jonathan", "Anna", "Stephen", "Brenda",
    "Larry", "Pamela", "Justin", "Emma", "Scott", "Nicole", "Brandon", "Helen", "Benjamin",
    "Samantha", "Samuel", "Katherine", "Gregory", "Christine", "Alexander", "Debra", "Frank",
    "Rachel", "Patrick", "Carolyn", "Raymond", "Janet", "Jack", "Catherine", "Dennis", "Maria",
    "Jerry", "Heather", "Tyler", "Diane", "Aaron", "Ruth", "Jose", "Julie", "Adam", "Olivia",
    "Nathan", "Joyce", "Henry", "Virginia", "Douglas", "Victoria", "Zachary", "Kelly", "Peter",
    "Lauren", "Kyle", "Christina", "Ethan", "Joan", "Walter", "Evelyn", "Noah", "Judith", "Jeremy",
    "Megan", "Christian", "Andrea", "Keith", "Cheryl", "Roger", "Hannah", "Terry", "Jacqueline",
    "Gerald", "Martha", "Harold", "Gloria", "Sean", "Teresa", "Austin", "Ann", "Carl", "Sara",
    "Arthur", "Madison", "Lawrence", "Frances", "Dylan", "Kathryn", "Jesse", "Janice", "Jordan",
    "Jean", "Bryan", "Abigail", "Billy", "Alice", "Joe", "Julia", "Bruce", "Judy", "Gabriel",
    "Sophia", "Logan", "Grace", "Albert", "Denise", "Willie", "Amber", "Alan", "Doris", "Juan",
    "Marilyn", "Wayne", "Danielle", "Elijah", "Beverly", "Randy", "Isabella", "Roy", "Theresa",
    "Vincent", "Diana", "Ralph", "Natalie", "Eugene", "Brittany", "Russell", "Charlotte", "Bobby",
    "Marie", "Mason", "Kayla", "Philip", "Alexis", "Louis", "Lori",
];

#[rustfmt::skip]
const LAST_NAMES: &[&str] = &[
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
    "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore",
    "Jackson", "Martin", "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark",
    "Ramirez", "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright", "Scott", "Torres",
    "Nguyen", "Hill", "Flores", "Green", "Adams", "Nelson", "Baker", "Hall", "Rivera", "Campbell",
    "Mitchell", "Carter", "Roberts", "Gomez", "Phillips", "Evans", "Turner", "Diaz", "Parker",
    "Cruz", "Edwards", "Collins", "Reyes", "Stewart", "Morris", "Morales", "Murphy", "Cook",
    "Rogers", "Gutierrez", "Ortiz", "Morgan", "Cooper", "Peterson", "Bailey", "Reed", "Kelly",
    "Howard", "Ramos", "Kim", "Cox", "Ward", "Richardson", "Watson", "Brooks", "Chavez", "Wood",
    "James", "Bennett", "Gray", "Mendoza", "Ruiz", "Hughes", "Price", "Alvarez", "Castillo",
    "Sanders", "Patel", "Myers", "Long", "Ross", "Foster", "Jimenez", "O'Brien", "McDonald",
    "Powell", "Jenkins", "Perry", "Russell", "Sullivan", "Bell", "Coleman", "Butler", "Henderson",
    "Barnes", "Gonzales", "Fisher", "Vasquez", "Simmons", "Romero", "Jordan", "Patterson",
    "Alexander", "Hamilton", "Graham", "Reynolds", "Griffin", "Wallace", "Moreno", "West", "Cole",
    "Hayes", "Bryant", "Herrera", "Gibson", "Ellis", "Tran", "Medina", "Aguilar", "Stevens",
    "Murray", "Ford", "Castro", "Marshall", "Owens", "Harrison", "Fernandez", "McCoy", "Woods",
    "Washington", "Kennedy", "Wells", "Vargas", "Henry", "Chen", "Freeman", "Webb", "Tucker",
    "Guzman", "Burns", "Crawford", "Olson", "Simpson", "Porter", "Hunter", "Gordon", "Mendez",
    "Silva", "Shaw", "Snyder", "Mason", "Dixon", "Munoz", "Hunt", "Hicks", "Holmes", "Palmer",
    "Wagner", "Black", "Robertson", "Boyd", "Rose", "Stone", "Salazar", "Fox", "Warren", "Mills",
    "Meyer", "Rice", "Schmidt", "Garza", "Daniels",
];

#[rustfmt::skip]
const STREETS: &[&str] = &[
    "Main", "Oak", "Pine", "Maple", "Cedar", "Elm", "Washington", "Lake", "Hill", "Park", "Walnut",
    "Spring", "North Ridge", "Church", "Willow", "Mill", "Sunset", "Highland", "Jackson",
    "Jefferson", "Lincoln", "Madison", "Franklin", "River", "Forest", "Meadow", "Chestnut",
    "Center", "Union", "Railroad", "Prospect", "Broad", "Cherry", "Hickory", "Locust", "Laurel",
    "Poplar", "Magnolia", "Dogwood", "Sycamore", "Adams", "Monroe", "Grant", "Wilson", "Market",
    "School", "Water", "Bridge", "Valley View", "College", "Academy", "Orchard", "Greenwood",
    "Fairview", "Riverside", "Woodland", "Cottage", "Heritage", "Liberty", "Pleasant",
];

/// Street suffixes, each with the ways files write it.
const SUFFIXES: &[&[&str]] = &[
    &["Street", "St", "St.", "ST", "street"],
    &["Avenue", "Ave", "Ave.", "AVE", "Av"],
    &["Road", "Rd", "Rd.", "RD"],
    &["Drive", "Dr", "Dr.", "DR"],
    &["Lane", "Ln", "Ln.", "LN"],
    &["Court", "Ct", "Ct.", "CT"],
    &["Boulevard", "Blvd", "Blvd.", "BLVD"],
    &["Place", "Pl", "Pl."],
    &["Circle", "Cir", "Cir."],
    &["Terrace", "Ter", "Ter."],
    &["Parkway", "Pkwy", "Pkwy."],
    &["Way"],
];

const DIRECTIONS: &[&[&str]] = &[
    &["North", "N", "N."],
    &["South", "S", "S."],
    &["East", "E", "E."],
    &["West", "W", "W."],
];

/// City, state, first ZIP code of the area.
const PLACES: &[(&str, &str, u64)] = &[
    ("Springfield", "IL", 62701),
    ("Columbus", "OH", 43004),
    ("Austin", "TX", 73301),
    ("Denver", "CO", 80201),
    ("Portland", "OR", 97201),
    ("Madison", "WI", 53701),
    ("Raleigh", "NC", 27601),
    ("Boise", "ID", 83701),
    ("Albany", "NY", 12201),
    ("Tucson", "AZ", 85701),
    ("Omaha", "NE", 68101),
    ("Richmond", "VA", 23218),
    ("Fresno", "CA", 93650),
    ("Tampa", "FL", 33601),
    ("Newark", "NJ", 7101),
    ("Providence", "RI", 2901),
];

const AREA_CODES: &[u64] = &[
    212, 213, 305, 312, 404, 415, 503, 512, 602, 617, 702, 713, 720, 801, 813, 901, 916, 919,
];

#[rustfmt::skip]
const DOMAINS: &[&str] = &[
    "gmail.com", "yahoo.com", "hotmail.com", "outlook.com", "aol.com", "icloud.com", "comcast.net",
];

#[rustfmt::skip]
const CHANNELS: &[&str] = &[
    "web", "referral", "partner", "event", "cold call", "list-buy",
];

#[rustfmt::skip]
const WORDS: &[&str] = &[
    "interested", "call back", "no answer", "wrong number", "sent brochure", "",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn file(spec: &LeadFileSpec) -> (String, Vec<u64>) {
        let mut out = Vec::new();
        let truth = write_lead_file(spec, &mut out).expect("write");
        (String::from_utf8(out).expect("utf-8"), truth)
    }

    #[test]
    fn the_same_seed_writes_the_same_file() {
        let spec = LeadFileSpec::new(500, 30, 7);
        assert_eq!(file(&spec), file(&spec));
        assert_ne!(file(&spec).0, file(&LeadFileSpec { seed: 8, ..spec }).0);
    }

    #[test]
    fn rows_have_every_column_and_people_come_back() {
        let spec = LeadFileSpec::new(5_000, 40, 1);
        let (text, truth) = file(&spec);
        let mut lines = text.lines();
        let header = lines.next().expect("header");
        assert_eq!(header.split(',').count(), 40);
        assert!(header.starts_with("First Name,Last Name,Email,Phone,Mobile,Address"));
        let mut rows = 0;
        for line in lines {
            rows += 1;
            // Quoted cells hold one comma each; count fields outside quotes.
            let mut fields = 1;
            let mut quoted = false;
            for c in line.chars() {
                match c {
                    '"' => quoted = !quoted,
                    ',' if !quoted => fields += 1,
                    _ => {}
                }
            }
            assert_eq!(fields, 40, "{line}");
        }
        assert_eq!(rows, 5_000);
        let scores = pairwise(&truth, &truth.iter().map(Some).collect::<Vec<_>>());
        let relisted = scores.rows - scores.true_persons;
        assert!(
            (300..2_000).contains(&relisted),
            "{relisted} rows re-list someone"
        );
        assert_eq!((scores.precision, scores.recall), (1.0, 1.0));
    }

    #[test]
    fn spellings_vary_as_in_real_files() {
        let (text, _) = file(&LeadFileSpec::new(3_000, 10, 3));
        for needle in [
            " St.,",
            " ST,",
            " Street,",
            "(",
            "+1 ",
            "@GMAIL.COM",
            "Apt ",
            "#",
            "-",
        ] {
            assert!(text.contains(needle), "no {needle:?} in the file");
        }
        assert!(text.contains(",,"), "no blank cells");
    }

    #[test]
    fn phone_numbers_are_distinct() {
        let numbers: std::collections::HashSet<u64> = (0..200_000).map(phone_number).collect();
        assert_eq!(numbers.len(), 200_000);
        assert!(
            numbers
                .iter()
                .all(|n| (200..=999).contains(&(n / 10_000 % 1_000)))
        );
    }

    #[test]
    fn pairwise_counts_pairs() {
        // Truth: rows 0,1,2 are person 1; row 3 is person 2. Prediction: rows 0,1 together,
        // rows 2 and 3 together (one wrong pair), nothing for row 4 (person 3).
        let truth = [1, 1, 1, 2, 3];
        let predicted = [Some("a"), Some("a"), Some("b"), Some("b"), None];
        let scores = pairwise(&truth, &predicted);
        assert_eq!(
            (
                scores.true_pairs,
                scores.predicted_pairs,
                scores.correct_pairs
            ),
            (3, 2, 1)
        );
        assert_eq!(scores.precision, 0.5);
        assert!((scores.recall - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!((scores.true_persons, scores.predicted_persons), (3, 3));
    }
}
